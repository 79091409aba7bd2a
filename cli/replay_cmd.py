"""`recs replay --counterfactual`: off-policy evaluation of a target policy on logged impressions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from recs.cli.common import console, fail, out, print_json

POLICIES = ("logging", "uniform", "oracle")


def _fmt(v: object, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _render(rep, target_desc: str) -> None:
    d = rep.to_dict()
    boot = any("bootstrap" in e for e in d["estimates"].values())
    t = Table(title=f"counterfactual replay: {target_desc} ({d['reward']} per request, {d['n']:,} requests, "
                    f"{d['n_impressions']:,} impressions)", title_justify="left")
    lvl = f"{int(round(100 * d['level']))}%"
    cols = ["estimator", "value", "stderr", f"{lvl} CI", "lift", "lift CI"]
    cols += ["boot CI", "boot lift CI"] if boot else []
    for c in cols:
        t.add_column(c, justify="left" if c == "estimator" else "right", no_wrap=c in ("estimator", "value"),
                     overflow="fold")
    ci = lambda lo, hi, f=".4g": f"{_fmt(lo, f)}..{_fmt(hi, f)}"  # noqa: E731
    for name, e in d["estimates"].items():
        lf = e["lift"]
        row = [name, _fmt(e["value"]), _fmt(e["stderr"], ".2g"), ci(e["ci_low"], e["ci_high"]),
               _fmt(lf["value"], ".3f"), ci(lf["ci_low"], lf["ci_high"], ".3f")]
        if boot:
            b, lb = e["bootstrap"], lf["bootstrap"]
            row += [ci(b["ci_low"], b["ci_high"]), ci(lb["ci_low"], lb["ci_high"], ".3f")]
        t.add_row(*row)
    lg = d["logging"]
    t.add_row("(logging)", _fmt(lg["value"]), _fmt(lg["stderr"], ".2g"), ci(lg["ci_low"], lg["ci_high"]), "1",
              "", *([""] * (2 if boot else 0)))
    out.print(t)
    g = d["diagnostics"]
    dt = Table(title="diagnostics", title_justify="left", show_header=False)
    dt.add_column("what")
    dt.add_column("value", justify="right")
    for key in ("ess", "ess_ratio", "ess_requests", "max_weight", "mean_weight", "p99_weight", "share_zero_weight",
                "support_coverage", "unlogged_position_mass_share", "unseen_item_position_mass_share",
                "unseen_item_mass_share", "zero_propensity_mass_share", "target_mass_per_request",
                "dropped_target_rows", "pending_requests_dropped"):
        if key in g and g[key] is not None:
            dt.add_row(key, _fmt(g[key]))
    out.print(dt)
    for w in d["warnings"]:
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)


def _load_logs(logs: Path, reward: str, labels: Optional[Path], include_pending: bool, window: str, lazy: bool):
    """The logs with the reward attached; `lazy` (clicks, no labels): a scan the alignment streams in chunks."""
    from recs.evaluators.ope.inputs import open_frame, read_frame
    from recs.evaluators.ope.rewards import LabelJoin, attach_labels, read_labels

    if lazy and reward == "clicked" and labels is None:
        return LabelJoin(open_frame(logs, "impressions"), 0, "logs")
    df = read_frame(logs, "impressions")
    lab = read_labels(labels) if labels is not None else None
    if lab is None and reward in ("purchase", "revenue") and reward not in df.columns:
        if not logs.is_dir():
            fail(f"{logs}: no {reward!r} column; pass --labels (the output of `recs labels`) or a dataset folder")
        from datetime import timezone

        from recs.datasets.labels import LabelConfig, labels_from_dataset, parse_duration
        as_of = df["ts"].max().astimezone(timezone.utc)
        lab = labels_from_dataset(logs, LabelConfig(as_of=as_of, window=parse_duration(window))).frame
        console.print(f"labels: built from {logs} as of the last logged impression ({as_of.isoformat()}), "
                      f"window {window}", highlight=False)
    return attach_labels(df, lab, reward, include_pending, str(labels or logs))


def _policy_target(name: str, logs_path: Path, df):
    if not logs_path.is_dir():
        fail(f"--policy needs --logs to be a simulated dataset folder (it loads the world of {logs_path})")
    try:
        from recs.sim import World
    except ImportError as e:
        fail(f"--policy: the simulator is not available ({e})")
    from recs.evaluators.ope.target import (requests_from_impressions, sampled_target_from_policy,
                                            target_probs_from_policy)

    try:
        world = World.load(logs_path)
    except (FileNotFoundError, ValueError) as e:
        fail(f"--policy: {e}")
    policy = {"logging": world.logging_policy, "uniform": world.uniform_policy, "oracle": world.oracle_policy}[name]()
    from recs.sim.point_in_time import point_in_time

    policy = point_in_time(world, policy, logs_path)  # the world as each logged request saw it
    requests, ks = requests_from_impressions(df)
    requests = sorted(requests, key=lambda r: r.ts)
    shown = dict(df.group_by("request_id").agg("item_id").iter_rows())
    # exact probabilities of the logged items (weights) + one sampled slate per request (DM, support checks)
    try:
        return (target_probs_from_policy(policy, requests, ks, include=shown),
                sampled_target_from_policy(policy, requests, ks))
    except KeyError as e:
        fail(f"--policy {name}: cannot score the logged requests of {logs_path}: {e.args[0] if e.args else e}")


def _model_target(model: Path, df, temperature: float, seed: int):
    try:
        from recs.models import load_pipeline  # type: ignore[attr-defined]
    except ImportError:
        fail(f"--model {model}: loading trained pipelines is not available yet (recs.models.load_pipeline is "
             "missing); use --target-probs or --policy")
    from recs.evaluators.ope.target import plackett_luce_target, requests_from_impressions

    try:
        pipeline = load_pipeline(model)
    except (FileNotFoundError, ValueError) as e:
        fail(f"--model {model}: {e}")
    requests, ks = requests_from_impressions(df)
    return plackett_luce_target(pipeline, requests, ks, temperature, seed=seed), None


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_cmd(
        counterfactual: bool = typer.Option(False, "--counterfactual", help="Off-policy evaluation of a target."),
        logs: Path = typer.Option(..., "--logs", help="Impressions: a Parquet/CSV file or a dataset folder."),
        target_probs: Optional[Path] = typer.Option(None, "--target-probs",
                                                    help="request_id, position, item_id, prob (Parquet/CSV)."),
        model: Optional[Path] = typer.Option(None, "--model", help="A trained pipeline folder (`recs train`)."),
        temperature: float = typer.Option(0.0, "--temperature", help="--model: Plackett-Luce temperature (0: top-k)."),
        policy: Optional[str] = typer.Option(None, "--policy", help=f"Simulator policy: {', '.join(POLICIES)}."),
        estimators: str = typer.Option("ips,snips,clipped-ips,dm,dr,sndr,switch-dr", "--estimators",
                                       help="Comma-separated: ips,snips,clipped-ips,dm,dr,sndr,switch-dr,pi."),
        reward: str = typer.Option("clicked", "--reward", help="clicked | purchase | revenue."),
        clip: float = typer.Option(20.0, "--clip", help="Weight cap of clipped IPS; Switch-DR's threshold."),
        bootstrap: int = typer.Option(0, "--bootstrap", help="Percentile bootstrap resamples (by request)."),
        level: float = typer.Option(0.95, "--level", help="Interval level."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="`recs labels` output (delayed rewards)."),
        include_pending: bool = typer.Option(False, "--include-pending",
                                             help="Count requests whose purchase labels have not matured."),
        window: str = typer.Option("7d", "--attribution-window", help="Window when labels are built here."),
        folds: int = typer.Option(2, "--folds", help="Cross-fitting folds of the DM reward model."),
        seed: int = typer.Option(0, "--seed", help="Seed of folds, bootstrap and sampling."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        """Estimate what a target policy would have earned on logged traffic (IPS, SNIPS, DM, DR, ...)."""
        import time

        from recs.evaluators.ope import OPEConfig, OPEInputError, RewardModelConfig, build_inputs, run_ope
        from recs.evaluators.ope.inputs import open_frame

        if not counterfactual:
            fail("recs replay currently supports only --counterfactual (off-policy evaluation)")
        sources = [s for s in (target_probs, model, policy) if s is not None]
        if len(sources) != 1:
            fail("give exactly one of --target-probs, --model or --policy")
        if policy is not None and policy not in POLICIES:
            fail(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if temperature != 0 and model is None:
            fail("--temperature applies to --model only")
        est = tuple(e.strip() for e in estimators.split(",") if e.strip())
        try:
            cfg = OPEConfig(estimators=est, clip=clip, n_bootstrap=bootstrap, level=level, seed=seed,
                            reward_model=RewardModelConfig(n_folds=folds, seed=seed))
        except ValueError as e:
            fail(str(e))
        try:
            t0 = time.perf_counter()
            joined = _load_logs(logs, reward, labels, include_pending, window, lazy=target_probs is not None)
            df = joined.logs
            dm_target = None
            if target_probs is not None:
                target, desc = open_frame(target_probs), str(target_probs)
            elif policy is not None:
                (target, dm_target), desc = _policy_target(policy, logs, df), f"policy {policy}"
            else:
                (target, dm_target), desc = _model_target(model, df, temperature, seed), f"model {model}"
            inp = build_inputs(df, target, reward, logs_source=str(logs), target_source=desc, dm_target=dm_target)
            t_align = time.perf_counter() - t0
            rep = run_ope(inp, cfg)
        except OPEInputError as e:
            fail(str(e))
        stages = dict(rep.timings)
        rep.timings.clear()
        rep.timings.update({"read_align": t_align, **stages})
        rep.diagnostics["pending_requests_dropped"] = joined.pending_requests_dropped
        rep.diagnostics["reward_labels"] = joined.source
        if joined.source.endswith("(taken as final)"):
            rep.warnings.append(f"{reward} comes from the logs without label_status or --labels and is taken as "
                                "final: recent impressions may still convert, which biases every estimate down")
        if as_json:
            print_json(rep.to_dict())
            for w in rep.warnings:
                console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        else:
            _render(rep, desc)
