"""Rich rendering of power plans and experiment analyses (no statistics here)."""
from __future__ import annotations

import math

from rich.panel import Panel
from rich.table import Table

from recs.cli.common import out


def _num(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}"


def _pct(v: float | None, digits: int = 2) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v * 100:+.{digits}f}%"


def _int(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def render_plan(plan, design, traffic, logs) -> None:
    """Print a power plan."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    if logs is not None:
        t.add_row("metric (from logs)", f"{logs.metric_name} ({logs.kind}), baseline {_num(logs.baseline)}, "
                                        f"per-unit sd {_num(logs.std)}, {logs.n_units:,} units over {logs.days} days")
    else:
        what = f"baseline {_num(design.baseline)}" + ("" if design.std is None else f", sd {_num(design.std)}")
        t.add_row("metric", f"{design.metric}, {what}")
    t.add_row("test", plan.method)
    t.add_row("alpha / power", f"{plan.alpha:g} (per test {plan.alpha_per_test:.4g}) / "
                               f"{_num(plan.power, 3) if plan.power is not None else '-'}")
    label = "non-inferiority margin" if design.ni_margin is not None else "minimum detectable effect"
    t.add_row(label, f"{_num(plan.mde)} absolute ({_pct(plan.mde_relative)} relative)")
    t.add_row("n per arm", f"{_int(plan.n_per_arm)}  (x {plan.arms} arms = {_int(plan.total_units)} units)")
    if plan.cuped_r2 > 0:
        if plan.n_per_arm_without_cuped:
            saved = 1 - plan.n_per_arm / plan.n_per_arm_without_cuped
            t.add_row("CUPED", f"R^2 {plan.cuped_r2:.3f}: n per arm {_int(plan.n_per_arm_without_cuped)} -> "
                               f"{_int(plan.n_per_arm)} ({saved:.1%} fewer units)")
        elif plan.mde_without_cuped:
            t.add_row("CUPED", f"R^2 {plan.cuped_r2:.3f}: MDE {_num(plan.mde_without_cuped)} -> {_num(plan.mde)} "
                               f"({1 - plan.mde / plan.mde_without_cuped:.1%} smaller)")
        else:
            t.add_row("CUPED", f"R^2 {plan.cuped_r2:.3f}: variance x {1 - plan.cuped_r2:.3f}")
    if traffic is not None:
        t.add_row("traffic", f"{traffic.daily_units:,.0f} units/day from {traffic.source}, share "
                             f"{traffic.traffic_share:g}")
        if plan.days is not None:
            t.add_row("duration", f"{plan.days} days ({plan.days // 7} week(s); {plan.days_raw} days of traffic, "
                                  "rounded up to whole weeks, at least one)")
        else:
            t.add_row("duration", "not reachable")
    out.print(Panel(t, title=f"A/B power: solved for {plan.solved_for}", expand=False))
    if plan.mde_by_weeks:
        w = Table(title="MDE against duration")
        for col in ("weeks", "n per arm", "MDE (abs)", "MDE (rel)", "power at your MDE"):
            w.add_column(col, justify="right")
        for r in plan.mde_by_weeks:
            w.add_row(str(r["weeks"]), _int(r["n_per_arm"]), _num(r["mde"]), _pct(r["mde_relative"]),
                      _num(r["power_at_mde"], 3) if r["power_at_mde"] is not None else "-")
        out.print(w)
    for n in plan.notes:
        out.print(f"note: {n}", highlight=False)


def _pcell(m) -> str:
    if m.sequential and "boundary" in m.sequential:
        return f"{m.sequential['z']:.2f} / {_num(m.sequential['boundary'], 3)}"
    return f"{_num(m.p_value, 2)} / {_num(m.p_adjusted, 2)}"


def render_analysis(res) -> None:
    """Print an experiment analysis; the SRM verdict comes first and loudly."""
    srm = res.srm
    counts = ", ".join(f"{k}={v:,}" for k, v in srm["counts"].items())
    if srm["mismatch"]:
        out.print(Panel(f"[bold]SAMPLE RATIO MISMATCH[/]: {counts}; chi-square {srm['chi2']:.2f}, "
                        f"p = {srm['p_value']:.3g} < {srm['threshold']:g}.\nThe assignment or the logging is broken; "
                        "the effects below are NOT trustworthy.", style="bold red", expand=False))
    else:
        out.print(f"SRM check: {counts}; chi-square {srm['chi2']:.2f}, p = {srm['p_value']:.3g} (ok)",
                  highlight=False)
    ci_kind = "" if res.sequential is None else " (sequential)"
    several = len(res.decisions) > 1
    gs = any(m.sequential and "boundary" in m.sequential for m in res.metrics)
    t = Table(title=f"Success metrics (control: {res.control}; alpha {res.alpha:g}; correction: {res.correction})")
    cols = ["metric"] + (["arm"] if several else []) + ["control", "treatment", "lift [CI]",
                                                         "z / bound" if gs else "p / adj", "result"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("metric", "arm", "result") else "right")
    for m in res.metrics:
        style = {"win": "green", "loss": "red"}.get(m.outcome, "")
        t.add_row(*([m.metric] + ([m.arm] if several else []) + [
            _num(m.control_mean), _num(m.treatment_mean),
            f"{_pct(m.lift)} [{_pct(m.lift_ci[0])}, {_pct(m.lift_ci[1])}]",
            _pcell(m),
            f"[{style}]{m.outcome}[/]" if style else m.outcome]))
    out.print(t)
    for m in res.metrics:
        extra = (f"{m.metric} ({m.arm}): diff {_num(m.diff)}, {1 - res.alpha:.0%} CI{ci_kind} "
                 f"[{_num(m.ci[0])}, {_num(m.ci[1])}]; {m.method}")
        if m.variance_reduction is not None:
            extra += f"; CUPED variance reduction {m.variance_reduction:.1%}"
        if m.sequential:
            s = m.sequential
            if "boundary" in s:
                crossed = f"crossed at look {s['crossed_at_look']}" if s["crossed_at_look"] else "not crossed"
                extra += (f"; {s['method']}: look {s['looks']}, information {s['information_fraction']:.0%}, "
                          f"z = {s['z']:.2f}, boundary {_num(s['boundary'], 3)} ({crossed})")
            else:
                extra += f"; {s['method']} over {s['looks']} look(s), tau {_num(s['tau'], 3)}"
        out.print(extra, highlight=False)
    if res.guardrails:
        g = Table(title="Guardrails (non-inferiority)")
        for col in ("guardrail", "arm", "control", "treatment", "lift", "bound", "result"):
            g.add_column(col)
        for m in res.guardrails:
            rel = "%" in (m.margin or "")
            bound = _pct(m.bound) if rel else _num(m.bound)
            g.add_row(m.margin, m.arm, _num(m.control_mean), _num(m.treatment_mean), _pct(m.lift), bound,
                      "[green]pass[/]" if m.outcome == "pass" else "[red]fail[/]")
        out.print(g)
    for n in res.notes:
        out.print(f"note: {n}", highlight=False)
    for arm, d in res.decisions.items():
        color = {"SHIP": "green", "INVALID": "red", "DO NOT SHIP": "yellow", "CONTINUE": "cyan"}[d["decision"]]
        out.print(f"[bold {color}]DECISION ({arm}): {d['decision']}[/] - {d['reason']}", highlight=False)
