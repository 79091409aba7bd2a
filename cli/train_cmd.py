"""`recs train all|retriever|ranker` and `recs evaluate`."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recs.cli.common import check_output_dir, console, fail, out, parse_time, print_json

train_app = typer.Typer(help="Train retrievers and the ranker.", no_args_is_help=True)


def _dataset(path: Path) -> Path:
    if not path.is_dir():
        fail(f"{path}: dataset folder not found")
    if not (path / "catalog.parquet").exists() and not (path / "catalog").is_dir():
        fail(f"{path}: not a canonical dataset (no catalog table)")
    return path


@train_app.command("all")
def train_all_cmd(
    dataset: Path = typer.Option(..., "--dataset", help="Canonical dataset folder."),
    out_dir: Path = typer.Option(..., "--out", help="Model folder to write."),
    holdout_days: int = typer.Option(1, "--holdout-days", help="Last days held out for `recs evaluate`."),
    ranker_days: int = typer.Option(2, "--ranker-days", help="Days before the hold-out the ranker learns on."),
    retrievers: str = typer.Option(None, "--retrievers",
                                   help="Comma-separated kinds (default: all of them, as TrainConfig)."),
    embedding_epochs: int = typer.Option(None, "--embedding-epochs", help="Default: TrainConfig's."),
    max_ranker_requests: int = typer.Option(None, "--max-ranker-requests", help="Default: TrainConfig's."),
    price_weight: float = typer.Option(None, "--price-weight",
                                       help="Lean the ranking towards pricier items: + W x log(price) (default 0)."),
    new_item_share: float = typer.Option(None, "--new-item-share",
                                         help="Share of requests whose last slot goes to the best-scored item created "
                                         "in the last 48 h (default 1; 0: off)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Labels, every retriever, then the LightGBM ranker: the one command a newcomer runs."""
    from recs.models.rerank import RerankConfig
    from recs.models.train import TrainConfig, train_all

    _dataset(dataset)
    check_output_dir(out_dir, overwrite)
    try:
        given = {"retrievers": tuple(r.strip() for r in retrievers.split(",") if r.strip()) if retrievers else None,
                 "embedding_epochs": embedding_epochs, "max_ranker_requests": max_ranker_requests,
                 "rerank": RerankConfig(**{k: v for k, v in (("price_weight", price_weight),
                                                             ("new_item_share", new_item_share)) if v is not None})
                 if price_weight is not None or new_item_share is not None else None}
        cfg = TrainConfig(holdout_days=holdout_days, ranker_days=ranker_days,
                          **{k: v for k, v in given.items() if v is not None})
        with console.status("training") as status:
            meta = train_all(dataset, out_dir, cfg, overwrite=overwrite,
                             log=lambda msg: (status.update(msg), console.log(msg)))
    except ValueError as e:
        fail(str(e))
    if as_json:
        print_json(meta)
        return
    _model_table(meta, out_dir)


def _model_table(meta: dict, out_dir: Path) -> None:
    t = Table(title=f"model {meta['policy_id']}", show_header=False)
    t.add_row("training window", f"{meta['training_window']['start']} .. {meta['training_window']['end']}")
    t.add_row("ranker window", f"{meta['ranker_window']['start']} .. {meta['ranker_window']['end']}")
    t.add_row("hold-out", f"{meta['holdout']['start']} .. {meta['holdout']['end']}")
    t.add_row("retrievers", ", ".join(meta["retrievers"]))
    t.add_row("ranker valid NDCG@10", f"{meta['ranker']['valid_ndcg']:.4f}")
    for stage, s in meta["stage_seconds"].items():
        t.add_row(f"seconds: {stage}", f"{s:.1f}")
    out.print(t)
    out.print(f"written to [bold]{out_dir}[/]")


@train_app.command("retriever")
def train_retriever_cmd(
    kind: str = typer.Option(..., "--kind", help="popularity | covisit | content | embedding | suggest | clickmodel"),
    dataset: Path = typer.Option(..., "--dataset"),
    out_dir: Path = typer.Option(..., "--out"),
    until: str = typer.Option(None, "--until", help="Train on data before this time (ISO 8601; default: all). "
                              "For `recs train ranker`, leave the ranker's days after it."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit one retriever and save it with where its training data ends (training.json)."""
    from recs.models.registry import KINDS
    from recs.models.train_stages import train_one_retriever

    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _dataset(dataset)
    check_output_dir(out_dir, overwrite)
    cut = parse_time(until, "--until") if until else None
    try:
        with console.status(f"fitting {kind}"):
            rec = train_one_retriever(dataset, kind, out_dir, cut, overwrite=overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        print_json(rec)
        return
    out.print(f"{kind} retriever (data before {rec['trained_until']}) written to [bold]{out_dir}[/] "
              f"in {rec['seconds']:.1f} s")


@train_app.command("ranker")
def train_ranker_cmd(
    dataset: Path = typer.Option(..., "--dataset"),
    labels: Path = typer.Option(..., "--labels", help="Output of `recs labels`, as of the hold-out's start "
                                "at the latest."),
    retrievers_dirs: list[str] = typer.Option(..., "--retrievers", help="Folders of `recs train retriever` "
                                              "(repeat the option or separate them by commas); the ranker learns "
                                              "on the days after them."),
    out_dir: Path = typer.Option(..., "--out", help="Model folder to write (serves these retrievers)."),
    holdout_days: int = typer.Option(1, "--holdout-days", help="Last days held out for `recs evaluate`."),
    max_ranker_requests: int = typer.Option(None, "--max-ranker-requests", help="Default: TrainConfig's."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """LightGBM rankers over saved retrievers, on the labelled days between them and the hold-out."""
    from recs.models.train import TrainConfig
    from recs.models.train_stages import train_ranker_on

    _dataset(dataset)
    check_output_dir(out_dir, overwrite)
    try:
        extra = {"max_ranker_requests": max_ranker_requests} if max_ranker_requests is not None else {}
        cfg = TrainConfig(holdout_days=holdout_days, **extra)
        with console.status("training the ranker") as status:
            dirs = [Path(p.strip()) for given in retrievers_dirs for p in given.split(",") if p.strip()]
            meta = train_ranker_on(dataset, labels, dirs, out_dir, cfg, overwrite=overwrite,
                                   log=lambda msg: (status.update(msg), console.log(msg)))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        print_json(meta)
        return
    _model_table(meta, out_dir)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")

    @app.command("evaluate")
    def evaluate_cmd(
        model: Path = typer.Option(..., "--model", help="Model folder from `recs train all`."),
        dataset: Path = typer.Option(..., "--dataset", help="The dataset (its hold-out period is evaluated)."),
        k: int = typer.Option(10, "--k"),
        max_requests: int = typer.Option(3000, "--max-requests"),
        true_ctr_requests: int = typer.Option(2000, "--true-ctr-requests"),
        seed: int = typer.Option(0, "--seed", min=0,
                                 help="Another seed, another independent set of fresh requests for the true CTR "
                                 "(and another sample of hold-out requests beyond --max-requests)."),
        out_file: Path = typer.Option(None, "--out", help="Write the JSON result here too."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Recall@K, NDCG@K, MRR, hit rate, coverage per segment; on simulated data the true CTR."""
        from recs.datasets.io import atomic_write_json
        from recs.scenarios.evaluate import EvaluateConfig, evaluate

        if not (model / "model.json").is_file():
            fail(f"{model}: not a trained model folder (no model.json)")
        _dataset(dataset)
        try:
            cfg = EvaluateConfig(k=k, max_requests=max_requests, true_ctr_requests=true_ctr_requests, seed=seed)
            with console.status("evaluating"):
                res = evaluate(model, dataset, cfg)
        except ValueError as e:
            fail(str(e))
        if out_file:
            atomic_write_json(out_file, res)
        if as_json:
            print_json(res)
            return
        out.print(evaluate_table(res))
        if res.get("true_ctr"):
            out.print(true_ctr_table(res))

    del evaluate_cmd

    @app.command("skew-check")
    def skew_cmd(
        dataset: Path = typer.Option(..., "--dataset"),
        requests: int = typer.Option(200, "--requests", help="Logged requests to compare."),
        out_file: Path = typer.Option(None, "--out", help="Write the JSON result here too."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Training-serving skew: offline and online feature values for logged requests must be identical."""
        from recs.datasets.io import atomic_write_json
        from recs.features.skew import skew_check_dataset

        _dataset(dataset)
        if requests < 1:
            fail(f"--requests must be >= 1, got {requests}")
        try:
            res = skew_check_dataset(dataset, requests)
        except ValueError as e:
            fail(str(e))
        if out_file:
            atomic_write_json(out_file, res)
        if as_json:
            print_json(res)
        else:
            out.print(f"{res['rows']:,} rows of {res['requests']} requests: [bold]{res['mismatches']}[/] mismatches "
                      f"{res['mismatches_by_feature'] or ''}")
        if res["mismatches"]:
            raise typer.Exit(1)

    del skew_cmd


def evaluate_table(res: dict) -> Table:
    t = Table(title=f"hold-out metrics @ {res['k']}")
    for c in ("segment / source", "n", "recall", "ndcg", "mrr", "hit rate"):
        t.add_column(c)
    rows = [("pipeline", res["segments"])] + [(k, v) for k, v in res.get("retrievers", {}).items()]
    for name, segs in rows:
        for seg, m in segs.items():
            t.add_row(f"{name}: {seg}", str(m["n"]), f"{m['recall']:.4f}", f"{m['ndcg']:.4f}", f"{m['mrr']:.4f}",
                      f"{m['hit_rate']:.4f}")
    t.add_row("coverage", "", f"{res['coverage']:.4f}", "", "", "")
    t.add_row("policy violations", "", str(res["policy_violations"]), "", "", "")
    return t


def true_ctr_table(res: dict) -> Table:
    """The simulator's truth: CTR per policy overall and per request segment, then the new items' slots."""
    policies = ("pipeline", "logging", "informed", "oracle")
    tc, segs, new = res["true_ctr"], res.get("true_ctr_segments", {}), res.get("true_ctr_new_items")
    t = Table(title=f"true CTR on {res['true_ctr_requests']['n']:,} fresh simulated requests")
    for c in ("", *policies):
        t.add_column(c)
    t.add_row("all", *(f"{tc[p]:.4f}" for p in policies))
    for seg, v in segs.items():
        t.add_row(seg, *(f"{v[p]:.4f}" if p in v else "" for p in policies))
    t.add_row("revenue / request", *(f"{tc[f'{p}_revenue_per_request']:.2f}" for p in policies))
    if new:
        t.add_row(f"new items ({new['n_items']:,}): share of slots", *(f"{new[p]['slot_share']:.2%}" for p in policies))
        t.add_row("new items: CTR of their slots",
                  *("-" if new[p]["ctr"] is None else f"{new[p]['ctr']:.4f}" for p in policies))
    t.caption = (f"pipeline: {tc['pipeline_vs_logging']:.3f}x logging, {tc['pipeline_vs_oracle']:.1%} of oracle, "
                 f"{tc['pipeline_vs_informed']:.1%} of informed")
    return t
