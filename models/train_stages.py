"""`recs train retriever` and `recs train ranker`: the stages of `train_all`, run one at a time.

A retriever trained alone records where its training data ends (`training.json` beside its files). The ranker
is then trained on the labelled impressions after the latest of those ends and before the hold-out, so no label
of a ranker row has been seen by the retrievers that compute its features, exactly as in `train_all`. Unlike
`train_all`, the given retrievers are also the ones served (they are not refitted on the ranker's days).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from recs.datasets.io import atomic_dir
from recs.datasets.labels import label_files
from recs.models.registry import KINDS, load_retriever
from recs.models.train import (
    Progress, Tables, TrainConfig, dataset_fingerprint, fit_rankers, fit_retrievers, write_model,
)
from recs.models.training_rows import day_start

TRAINING_FILE = "training.json"
LABEL_COLUMNS = ("request_id", "ts", "item_id", "position", "grade", "weight")


def _utc(t: datetime) -> datetime:
    """A time without a zone is UTC (as everywhere in the toolkit)."""
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def train_one_retriever(dataset: Path, kind: str, out: Path, until: datetime | None = None,
                        cfg: TrainConfig = TrainConfig(), overwrite: bool = False) -> dict:
    """Fit one retriever on the dataset's data before `until` (default: all of it) and save it with its
    `training.json` (kind, data end, dataset fingerprint), both in one atomic rename; returns that record."""
    if kind not in KINDS:
        raise ValueError(f"unknown retriever kind {kind!r}; choose from {', '.join(KINDS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    tables = Tables.read(Path(dataset))
    end = tables.impressions["ts"].max() + timedelta(microseconds=1)
    if until is not None:
        until = _utc(until)
        if until <= tables.impressions["ts"].min():
            raise ValueError(f"--until {until.isoformat()}: before the dataset's first impression")
        end = min(until, end)
    t0 = time.perf_counter()
    r = fit_retrievers(tables.before(end), replace(cfg, retrievers=(kind,)), lambda _: None)[kind]
    record = {"kind": kind, "trained_until": end.isoformat(), "dataset": str(Path(dataset).resolve()),
              "dataset_fingerprint": dataset_fingerprint(Path(dataset)),
              "seconds": round(time.perf_counter() - t0, 2)}
    with atomic_dir(out, overwrite=True) as tmp:        # the retriever and its record appear together
        stage = tmp / "retriever"
        r.save(stage)
        for f in stage.iterdir():
            f.rename(tmp / f.name)
        stage.rmdir()
        (tmp / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_training_record(folder: Path) -> dict:
    """The `training.json` of a retriever folder written by `train_one_retriever`, checked."""
    f = Path(folder) / TRAINING_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f}: missing; --retrievers takes folders written by `recs train retriever`, "
                                "which records where the retriever's training data ends")
    try:
        rec = json.loads(f.read_text())
        rec["trained_until"] = _utc(datetime.fromisoformat(rec["trained_until"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{f}: not a retriever training record ({e})") from None
    if rec.get("kind") not in KINDS:
        raise ValueError(f"{f}: field 'kind' is {rec.get('kind')!r}; known kinds: {', '.join(KINDS)}")
    return rec


def read_labels(path: Path) -> tuple[pl.DataFrame, datetime]:
    """Labels written by `recs labels` (a folder with labels.parquet and summary.json, or FILE.parquet with
    FILE.summary.json) and the time they are as of."""
    data, summary = label_files(path)
    for f in (data, summary):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; --labels takes the output of `recs labels`")
    try:
        frame = pl.read_parquet(data)
    except Exception as e:      # polars raises several kinds for a file that is not Parquet
        raise ValueError(f"{data}: cannot read as Parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{data}: missing column(s) {', '.join(missing)}; not an output of `recs labels`")
    try:
        as_of = _utc(datetime.fromisoformat(json.loads(summary.read_text())["as_of"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{summary}: no valid 'as_of' ({e})") from None
    return frame, as_of


def train_ranker_on(dataset: Path, labels_path: Path, retriever_dirs: list[Path], out: Path,
                    cfg: TrainConfig = TrainConfig(), overwrite: bool = False,
                    log: Progress = lambda _: None) -> dict:
    """The rankers over saved retrievers: rows from the labelled impressions between the retrievers' latest
    training end and the hold-out (the last `cfg.holdout_days` days); writes a model folder like `train_all`'s,
    serving the given retrievers. Refuses labels as of a time after the hold-out starts (they would carry
    conversions from the evaluated days) and retrievers whose data reaches into the ranker's window."""
    t_all = time.perf_counter()
    if not retriever_dirs:
        raise ValueError("--retrievers: give at least one retriever folder")
    records, folders, retrievers = {}, {}, {}
    for d in retriever_dirs:
        rec = read_training_record(d)
        if rec["kind"] in records:
            raise ValueError(f"{d}: a second {rec['kind']} retriever (one folder per kind)")
        records[rec["kind"]], folders[rec["kind"]] = rec, Path(d)
    for kind in sorted(records, key=KINDS.index):   # train_all's order: blending is round-robin in this order
        r = load_retriever(kind, folders[kind])
        own = getattr(r, "as_of", None)             # the classic retrievers also keep their own cut
        if own is not None and _utc(own) > records[kind]["trained_until"]:
            raise ValueError(f"{folders[kind] / TRAINING_FILE}: says the data ends at "
                             f"{records[kind]['trained_until'].isoformat()}, the retriever itself was fitted on "
                             f"data up to {_utc(own).isoformat()}")
        retrievers[kind] = r
    tables = Tables.read(Path(dataset))
    fp = dataset_fingerprint(Path(dataset))
    other = sorted(k for k, rec in records.items() if rec.get("dataset_fingerprint") != fp)
    if other:
        log(f"note: trained on another dataset: {', '.join(other)} (recorded in model.json)")
    holdout_start = day_start(tables.impressions["ts"].max()) + timedelta(days=1 - cfg.holdout_days)
    win = {"start": tables.impressions["ts"].min(), "end": tables.impressions["ts"].max(),
           "train_end": holdout_start, "ranker_start": max(rec["trained_until"] for rec in records.values())}
    late = [str(folders[k]) for k, rec in records.items() if rec["trained_until"] >= holdout_start]
    if late:
        raise ValueError(f"{', '.join(late)}: trained on data up to the hold-out ({holdout_start:%Y-%m-%d}), which "
                         "leaves no ranker days they have not seen; train them with `recs train retriever --until` "
                         f"{day_start(holdout_start - timedelta(days=2)):%Y-%m-%d}")
    labels, as_of = read_labels(labels_path)
    if as_of > win["train_end"]:
        raise ValueError(f"{labels_path}: labels as of {as_of.isoformat()} are later than the hold-out's start "
                         f"({win['train_end'].isoformat()}); build them with `recs labels --as-of "
                         f"{win['train_end']:%Y-%m-%dT%H:%M:%S}`")
    log(f"ranker window: {win['ranker_start']:%Y-%m-%d %H:%M} to {win['train_end']:%Y-%m-%d %H:%M}")
    times: dict[str, float] = {}
    fit = fit_rankers(tables, labels, retrievers, win, cfg, log, times)
    extra = {"policy_id": f"pipeline-{fp[:8]}-r{win['ranker_start']:%Y%m%d%H%M}",
             "retrievers_trained_until": {k: r["trained_until"].isoformat() for k, r in records.items()},
             "retrievers_from_other_datasets": other,
             "labels": {"path": str(Path(labels_path).resolve()), "as_of": as_of.isoformat()},
             "retrievers_refitted": False}
    return write_model(Path(dataset), out, tables, retrievers, fit, win, cfg, times, t_all, overwrite, extra)


__all__ = ["train_one_retriever", "train_ranker_on", "read_training_record", "read_labels"]
