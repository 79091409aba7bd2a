"""`recs train retriever` and `recs train ranker`: the stages of `train all` one at a time, with their leak guards."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl
import pytest
from typer.testing import CliRunner

from recs.cli.main import app
from recs.models.pipeline import Pipeline
from recs.sim import SimConfig, World, generate_dataset

KINDS = ("popularity", "covisit", "content", "embedding", "suggest", "clickmodel")   # registry order
UNTIL = "2026-01-07"            # the simulator starts on 2026-01-05; 5 days, the last one held out


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    ds = root / "ds"
    generate_dataset(SimConfig(n_users=300, n_items=1200, days=5, requests_per_day=1500, seed=4), ds)
    dirs = []
    for kind in KINDS:
        res = _run("train", "retriever", "--kind", kind, "--dataset", ds, "--out", root / "r" / kind,
                   "--until", UNTIL, "--json")
        assert res.exit_code == 0, res.output
        dirs.append(root / "r" / kind)
    res = _run("labels", "--dataset", ds, "--as-of", "2026-01-09T00:00:00Z", "--out", root / "labels")
    assert res.exit_code == 0, res.output
    return root, ds, dirs


def test_ranker_learns_on_the_days_between_the_retrievers_and_the_holdout(staged):
    root, ds, dirs = staged
    rev = dirs[::-1]            # given in another order: the model still blends in the registry's order
    args = ["train", "ranker", "--dataset", ds, "--labels", root / "labels", "--out", root / "model", "--json",
            "--retrievers", rev[0], "--retrievers", ",".join(str(d) for d in rev[1:])]   # repeated, or commas
    res = _run(*args)
    assert res.exit_code == 0, res.output
    meta = json.loads(res.stdout)
    start = datetime.fromisoformat(meta["ranker_window"]["start"])
    assert start == datetime(2026, 1, 7, tzinfo=timezone.utc)
    assert datetime.fromisoformat(meta["holdout"]["start"]) == datetime(2026, 1, 9, tzinfo=timezone.utc)
    assert {datetime.fromisoformat(t) for t in meta["retrievers_trained_until"].values()} == {start}   # all --until
    assert meta["retrievers"] == list(KINDS) and not meta["retrievers_refitted"]
    assert meta["ranker"]["rows"] > 1000
    # the retrievers' own data ends where they say: nothing of the ranker's days is in them
    pop = json.loads((dirs[0] / "meta.json").read_text())          # the retriever's own record of its cut
    assert datetime.fromisoformat(pop["as_of"]) == start
    assert meta["policy_id"].endswith("-r202601070000")    # not the id `train all` gives a model of this dataset
    # the model is a complete one: it loads, ranks under live inventory and evaluates on the hold-out
    world = World.load(ds)
    pipe = Pipeline.load(root / "model", state=world.state)
    req = [r for r in world.sample_requests(20, 3) if r.surface == "home"][0]
    ranking = pipe.rank(req, 10)
    assert len(ranking.item_ids) == 10 and "rank" in ranking.stages
    res = _run("evaluate", "--model", root / "model", "--dataset", ds, "--max-requests", 200, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["segments"]["all"]["ndcg"] > 0


def test_leaks_and_bad_input_are_refused_with_the_reason(staged, tmp_path):
    root, ds, dirs = staged
    base = ["train", "ranker", "--dataset", ds, "--out", tmp_path / "m"]
    # a retriever trained on every day: no ranker day is left that it has not seen
    res = _run("train", "retriever", "--kind", "popularity", "--dataset", ds, "--out", tmp_path / "all_days")
    assert res.exit_code == 0, res.output
    res = _run(*base, "--labels", root / "labels", "--retrievers", tmp_path / "all_days")
    assert res.exit_code != 0 and "no ranker days" in res.output and "--until" in res.output
    # labels as of a time inside the hold-out would carry its conversions
    res = _run("labels", "--dataset", ds, "--as-of", "2026-01-10T00:00:00Z", "--out", tmp_path / "late")
    assert res.exit_code == 0, res.output
    res = _run(*base, "--labels", tmp_path / "late", "--retrievers", dirs[0])
    assert res.exit_code != 0 and "later than the hold-out" in res.output
    # a folder that is not from `recs train retriever`, the same kind twice, labels without their columns
    res = _run(*base, "--labels", root / "labels", "--retrievers", tmp_path)
    assert res.exit_code != 0 and "training.json" in res.output
    res = _run(*base, "--labels", root / "labels", "--retrievers", dirs[0], "--retrievers", dirs[0])
    assert res.exit_code != 0 and "second popularity" in res.output
    bad = tmp_path / "bad_labels"
    bad.mkdir()
    pl.read_parquet(root / "labels" / "labels.parquet").drop("grade").write_parquet(bad / "labels.parquet")
    (bad / "summary.json").write_text((root / "labels" / "summary.json").read_text())
    res = _run(*base, "--labels", bad, "--retrievers", dirs[0])
    assert res.exit_code != 0 and "grade" in res.output and "labels.parquet" in res.output
    # a training record that claims an earlier cut than the retriever's own
    forged = tmp_path / "forged"
    res = _run("train", "retriever", "--kind", "popularity", "--dataset", ds, "--out", forged, "--until",
               "2026-01-08")
    assert res.exit_code == 0, res.output
    rec = json.loads((forged / "training.json").read_text())
    (forged / "training.json").write_text(json.dumps({**rec, "trained_until": "2026-01-06T00:00:00"}))
    res = _run(*base, "--labels", root / "labels", "--retrievers", forged)
    assert res.exit_code != 0 and "fitted on data up to" in res.output
    assert not (tmp_path / "m").exists()
    # an output folder in use is refused before anything is trained
    res = _run("train", "retriever", "--kind", "popularity", "--dataset", ds, "--out", forged)
    assert res.exit_code != 0 and "not empty" in res.output
    res = _run("train", "retriever", "--kind", "popularity", "--dataset", ds, "--out", tmp_path / "x",
               "--until", "yesterday")
    assert res.exit_code != 0 and "--until" in res.output


def test_labels_written_as_one_file_are_read_back(staged, tmp_path):
    """`recs labels --out FILE.parquet` and `--out FOLDER` are found where `read_labels` looks (`label_files`)."""
    from recs.datasets.labels import label_files
    from recs.models.train_stages import read_labels

    root, ds, _ = staged
    res = _run("labels", "--dataset", ds, "--as-of", "2026-01-09T00:00:00Z", "--out", tmp_path / "l.parquet")
    assert res.exit_code == 0, res.output
    assert label_files(tmp_path / "l.parquet") == (tmp_path / "l.parquet", tmp_path / "l.summary.json")
    as_file, as_of = read_labels(tmp_path / "l.parquet")
    in_folder, as_of_folder = read_labels(root / "labels")
    assert as_of == as_of_folder == datetime(2026, 1, 9, tzinfo=timezone.utc)
    assert as_file.equals(in_folder)


def test_a_click_model_fitted_past_its_training_record_is_refused(staged, tmp_path):
    """The click model keeps its own cut like the classic retrievers, so the check of the record covers it too."""
    import shutil

    root, ds, dirs = staged
    own = json.loads((dirs[KINDS.index("clickmodel")] / "meta.json").read_text()).get("as_of")
    assert own is not None and datetime.fromisoformat(own) == datetime(2026, 1, 7, tzinfo=timezone.utc)
    forged = tmp_path / "clickmodel"
    shutil.copytree(dirs[KINDS.index("clickmodel")], forged)
    rec = json.loads((forged / "training.json").read_text())
    (forged / "training.json").write_text(json.dumps({**rec, "trained_until": "2026-01-06T00:00:00"}))
    res = _run("train", "ranker", "--dataset", ds, "--out", tmp_path / "m", "--labels", root / "labels",
               "--retrievers", forged)
    assert res.exit_code != 0 and "fitted on data up to" in res.output
    assert not (tmp_path / "m").exists()
