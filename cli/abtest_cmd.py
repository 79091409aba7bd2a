"""`recs abtest-power` and `recs abtest-analyze`: size and analyse A/B tests (statistics in evaluators/)."""
from __future__ import annotations

from pathlib import Path

import typer

from recs.cli.abtest_render import render_analysis, render_plan
from recs.cli.common import fail, print_json


def register(app: typer.Typer) -> None:
    app.command("abtest-power")(abtest_power)
    app.command("abtest-analyze")(abtest_analyze)


def abtest_power(
    metric: str = typer.Option(None, "--metric", help="proportion | mean | ratio (implied by --from-logs)."),
    baseline: float = typer.Option(None, "--baseline", help="Control proportion, e.g. 0.2."),
    mean: float = typer.Option(None, "--mean", help="Control mean (or ratio) of a mean/ratio metric."),
    std: float = typer.Option(None, "--std", help="Per-unit standard deviation (ratio: of the linearisation)."),
    from_logs: Path = typer.Option(None, "--from-logs", help="Canonical dataset folder to estimate from."),
    metric_name: str = typer.Option(None, "--metric-name",
                                    help="With --from-logs: ctr | conversion | revenue_per_user."),
    mde: float = typer.Option(None, "--mde", help="Minimum detectable effect (absolute unless --relative)."),
    relative: bool = typer.Option(False, "--relative", help="--mde / --non-inferiority-margin are relative."),
    n_per_arm: int = typer.Option(None, "--n-per-arm", help="Units per arm (solve for the MDE, or power)."),
    days: int = typer.Option(None, "--days", help="Run length in days (solve for the MDE, or power)."),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.8, "--power"),
    arms: int = typer.Option(2, "--arms", help="Arms including control."),
    n_metrics: int = typer.Option(1, "--n-metrics", help="Success metrics tested (multiplicity)."),
    correction: str = typer.Option("bonferroni", "--correction", help="bonferroni | holm | none (for sizing)."),
    alternative: str = typer.Option("two-sided", "--alternative", help="two-sided | larger | smaller."),
    method: str = typer.Option("pooled", "--method", help="Proportions: pooled | unpooled | cohen-h."),
    ni_margin: float = typer.Option(None, "--non-inferiority-margin", help="Size a one-sided guardrail test."),
    cuped_r2: float = typer.Option(None, "--cuped-r2", help="R^2 of the pre-period covariate."),
    cuped_from_logs: bool = typer.Option(False, "--cuped-from-logs", help="Estimate the CUPED R^2 from --from-logs."),
    daily_units: float = typer.Option(None, "--daily-units", help="Eligible units per day (all arms)."),
    traffic_share: float = typer.Option(1.0, "--traffic-share", help="Share of traffic in the experiment."),
    sequential: str = typer.Option(None, "--sequential-method",
                                   help="obf | pocock: size the maximum sample of a group-sequential analysis."),
    looks: int = typer.Option(None, "--looks", help="Equally spaced looks of the group-sequential analysis."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Solve for sample size per arm, minimum detectable effect, power or duration."""
    from recs.evaluators.abtest_logs import log_metric_stats
    from recs.evaluators.abtest_power import PowerDesign, Traffic, plan

    logs = None
    if from_logs is not None:
        if not metric_name:
            fail("--from-logs needs --metric-name ctr|conversion|revenue_per_user")
        if not from_logs.is_dir():
            fail(f"{from_logs}: not a dataset folder")
        try:
            logs = log_metric_stats(from_logs, metric_name, cuped=cuped_from_logs)
        except (ValueError, FileNotFoundError) as exc:
            fail(f"{from_logs}: {exc}")
        if metric is not None and metric != logs.kind:
            fail(f"--metric {metric} contradicts --metric-name {metric_name}, which is a {logs.kind} metric")
        metric = logs.kind
    elif metric_name or cuped_from_logs:
        fail("--metric-name and --cuped-from-logs need --from-logs DATASET")
    if metric is None:
        fail("give --metric proportion|mean|ratio (or --from-logs DATASET --metric-name NAME)")
    if cuped_r2 is not None and cuped_from_logs:
        fail("give either --cuped-r2 or --cuped-from-logs, not both")
    if logs is not None:
        base, sd = logs.baseline, logs.std
    elif metric == "proportion":
        if baseline is None:
            fail("a proportion needs --baseline P")
        base, sd = baseline, None
    else:
        if mean is None or std is None:
            fail(f"a {metric} metric needs --mean M --std S (or --from-logs)")
        base, sd = mean, std
    r2 = logs.cuped_r2 if (logs is not None and cuped_from_logs) else (cuped_r2 or 0.0)
    traffic = None
    try:
        if daily_units is not None:
            traffic = Traffic(daily_units, traffic_share)
        elif logs is not None:
            traffic = Traffic(logs.daily_units, traffic_share, logs.cumulative_units, source=f"logs ({from_logs})")
        margin = ni_margin
        if margin is not None and relative:
            margin = margin * abs(base)
        design = PowerDesign(metric=metric, baseline=base, std=sd, alpha=alpha, power=power, arms=arms,
                             n_metrics=n_metrics, correction=correction, alternative=alternative, method=method,
                             ni_margin=margin, cuped_r2=r2, sequential=sequential,
                             looks=looks if looks is not None else (14 if sequential else 1))
        result = plan(design, mde=mde, relative=relative, n_per_arm=n_per_arm, days=days, traffic=traffic)
    except ValueError as exc:
        fail(str(exc))
    if logs is not None:
        result.notes.insert(0, logs.unit_note)
    if as_json:
        out = result.to_json()
        if logs is not None:
            out["logs"] = logs.to_json()
        print_json(out)
        return
    render_plan(result, design, traffic, logs)


def abtest_analyze(
    data: Path = typer.Option(..., "--data", help="Parquet or CSV, one row per unit."),
    unit: str = typer.Option("user_id", "--unit"),
    variant: str = typer.Option("variant", "--variant"),
    metrics: str = typer.Option(..., "--metrics", help="Success metrics: col, -col (lower is better), num/den."),
    control: str = typer.Option(None, "--control", help="Control arm (default: 'control' or the first)."),
    covariate: str = typer.Option(None, "--pre-period-covariate", help="COL, metric=COL,... or auto (pre_<col>)."),
    guardrails: str = typer.Option(None, "--guardrails", help="e.g. 'p99_latency_ms<=+2%,error_rate<=+0.1pp'."),
    split: str = typer.Option(None, "--split", help="Planned split, e.g. 0.5,0.5 (default equal)."),
    alpha: float = typer.Option(0.05, "--alpha"),
    correction: str = typer.Option("holm", "--correction", help="holm | bh | bonferroni | none."),
    srm_threshold: float = typer.Option(0.001, "--srm-threshold"),
    sequential: bool = typer.Option(False, "--sequential", help="Safe peeking (see --sequential-method)."),
    sequential_method: str = typer.Option(None, "--sequential-method",
                                          help="obf | pocock (group-sequential, need --planned-n-per-arm) | msprt."),
    planned_n_per_arm: int = typer.Option(None, "--planned-n-per-arm", help="Planned units per arm."),
    time_column: str = typer.Option(None, "--time-column", help="Analyse every cumulative look of this column."),
    previous_looks: str = typer.Option(None, "--previous-looks", help="Information fractions of earlier looks."),
    final_look: bool = typer.Option(False, "--final-look",
                                    help="The last look: it spends the remaining alpha and never says CONTINUE."),
    msprt_tau: float = typer.Option(0.05, "--msprt-tau", help="mSPRT mixing sd, relative to the control mean."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Analyse an experiment: SRM check, effects, CUPED, guardrails, corrections and a ship decision."""
    from recs.evaluators.abtest_analyze import AnalyzeConfig, analyze
    from recs.evaluators.abtest_input import ExperimentInputError, load_experiment, split_list

    seq = None
    if sequential or sequential_method:
        seq = sequential_method or ("obf" if planned_n_per_arm else "msprt")
    try:
        prev = [float(v) for v in split_list(previous_looks)]
    except ValueError:
        fail(f"--previous-looks {previous_looks!r}: expected fractions such as 0.25,0.5")
    try:
        cfg = AnalyzeConfig(
            metrics=split_list(metrics), unit=unit, variant=variant, control=control, covariates=covariate,
            guardrails=split_list(guardrails), split=split, alpha=alpha, srm_threshold=srm_threshold,
            correction=correction, sequential=seq, planned_n_per_arm=planned_n_per_arm, time_column=time_column,
            previous_looks=prev, final_look=final_look, msprt_tau=msprt_tau)
        df = load_experiment(data)
        result = analyze(df, cfg, source=str(data))
    except (ExperimentInputError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json())
    else:
        render_analysis(result)
    if result.srm_mismatch:
        raise typer.Exit(3)
