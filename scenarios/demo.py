"""`recs demo`: the whole toolkit end to end on the embedded default (a small simulated marketplace).

Every step is the real `recs` command a person would type; results land in `<out>/runs/*.json`, which
`recs gate` checks and `recs report` renders.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable


@dataclass
class StepResult:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    seed: int = 0
    loadtest_rate: int = 100
    loadtest_seconds: int = 10
    gates: Path = Path("gates.toml")
    steps: list[StepResult] = field(default_factory=list)


def _recs() -> list[str]:
    exe = Path(sys.executable).parent / "recs"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from recs.cli.main import app; app()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """Runs the steps in order; a failing step stops the demo with its output."""

    def __init__(self, cfg: DemoConfig, on_step: Callable[[str, int, int], None] = lambda *a: None) -> None:
        self.cfg, self.on_step = cfg, on_step
        self.out = cfg.out
        self.runs = self.out / "runs"

    def run_cmd(self, name: str, args: list[str], json_out: Path | None = None, ok_codes=(0,)) -> str:
        t0 = time.perf_counter()
        p = subprocess.run(_recs() + args, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if p.returncode not in ok_codes:
            self.cfg.steps.append(StepResult(name, dt, False, (p.stderr or p.stdout)[-2000:]))
            raise RuntimeError(f"step {name!r} failed (exit {p.returncode}): recs {' '.join(args)}\n"
                               f"{(p.stderr or p.stdout)[-2000:]}")
        if json_out is not None:
            json_out.write_text(p.stdout)
        self.cfg.steps.append(StepResult(name, dt, True, f"exit {p.returncode}"))
        return p.stdout

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        o, r, ds, model = self.out, self.runs, self.out / "dataset", self.out / "model"
        return [
            ("generate a simulated marketplace", lambda: self.run_cmd(
                "sim generate", ["sim", "generate", "--out", str(ds), "--seed", str(self.cfg.seed), "--json"],
                r / "sim.json")),
            ("ingest the impressions log (validation, reconciliation)", lambda: self.run_cmd(
                "ingest", ["ingest", "--table", "impressions", "--out", str(o / "ingested"), "--json",
                           str(ds / "impressions")], r / "ingest.json")),
            ("labels with delayed feedback", self._labels),
            ("train retrievers and ranker", lambda: self.run_cmd(
                "train all", ["train", "all", "--dataset", str(ds), "--out", str(model), "--json"],
                r / "model.json")),
            ("evaluate on the hold-out (and true CTR)", lambda: self.run_cmd(
                "evaluate", ["evaluate", "--model", str(model), "--dataset", str(ds), "--json"], r / "evaluate.json")),
            ("training-serving skew check", lambda: self.run_cmd(
                "skew-check", ["skew-check", "--dataset", str(ds), "--json"], r / "skew.json")),
            ("counterfactual replay of the pipeline on hold-out logs", self._replay),
            ("failure modes: stale inventory", lambda: self.run_cmd(
                "simulate stale-inventory", ["simulate", "stale-inventory", "--dataset", str(ds), "--model", str(model),
                                              "--out", str(r)])),
            ("failure modes: delayed feedback", lambda: self.run_cmd(
                "simulate delayed-feedback", ["simulate", "delayed-feedback", "--out", str(r)])),
            ("failure modes: drift", lambda: self.run_cmd(
                "simulate drift", ["simulate", "drift", "--out", str(r)])),
            ("drift check: first day vs hold-out day", self._drift),
            ("sign and verify a bundle", self._bundle),
            ("serve the bundle and load-test it", self._serve_and_loadtest),
            ("evaluation gates", lambda: self.run_cmd(
                "gate", ["gate", "--config", str(self.cfg.gates), "--candidate", str(r), "--json",
                         "--markdown", str(o / "gates.md"), "--junit", str(o / "gates.xml")], r / "gate.json",
                ok_codes=(0, 1))),
            ("report", lambda: self.run_cmd("report", ["report", "--runs", str(r), "--out", str(o / "report")])),
        ]

    def _labels(self) -> None:
        summary = json.loads((self.runs / "sim.json").read_text())
        self.run_cmd("labels", ["labels", "--dataset", str(self.out / "dataset"), "--as-of", summary["end"],
                                "--attribution-window", "2d", "--out", str(self.out / "labels"), "--json"],
                     self.runs / "labels.json")

    def _replay(self) -> None:
        import polars as pl

        from recs.datasets.io import read_table

        meta = json.loads((self.out / "model" / "model.json").read_text())
        start = datetime.fromisoformat(meta["holdout"]["start"])
        hold = read_table(self.out / "dataset", "impressions").filter(pl.col("ts") >= start)
        rids = hold["request_id"].unique().sort().head(2000)
        path = self.out / "holdout_impressions.parquet"
        hold.filter(pl.col("request_id").is_in(rids.implode())).write_parquet(path)
        self.run_cmd("replay", ["replay", "--counterfactual", "--logs", str(path), "--model", str(self.out / "model"),
                                "--temperature", "0.5", "--estimators", "ips,snips,clipped-ips,dr", "--json"],
                     self.runs / "replay.json")
        res = json.loads((self.runs / "replay.json").read_text())
        (self.runs / "replay.json").write_text(json.dumps({"kind": "replay", **res}, indent=2))

    def _drift(self) -> None:
        import polars as pl

        from recs.datasets.io import read_table

        imp = read_table(self.out / "dataset", "impressions").with_columns(pl.col("ts").dt.date().alias("day"))
        days = sorted(imp["day"].unique().to_list())
        cols = ["request_id", "surface", "position", "propensity", "clicked"]
        imp.filter(pl.col("day") == days[0]).select(cols).write_parquet(self.out / "drift_reference.parquet")
        imp.filter(pl.col("day") == days[-1]).select(cols).write_parquet(self.out / "drift_current.parquet")
        self.run_cmd("drift", ["drift", "--reference", str(self.out / "drift_reference.parquet"), "--current",
                               str(self.out / "drift_current.parquet"), "--cluster", "request_id",
                               "--out", str(self.runs / "drift_check.json")])

    def _bundle(self) -> None:
        keys, bundle = self.out / "keys", self.out / "bundle"
        self.run_cmd("keygen", ["keygen", "--out", str(keys), "--overwrite"])
        self.run_cmd("export-bundle", ["export-bundle", "--model", str(self.out / "model"), "--out", str(bundle),
                                       "--key", str(keys / "signing_key.pem"), "--overwrite", "--json"],
                     self.runs / "bundle_export.json")
        self.run_cmd("verify-bundle", ["verify-bundle", str(bundle), "--public-key", str(keys / "signing_key.pub.pem")])
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        (self.runs / "bundle.json").write_text(json.dumps({"kind": "bundle", "size_bytes": size}))

    def _serve_and_loadtest(self) -> None:
        port = _free_port()
        log = open(self.out / "serve.log", "w")
        server = subprocess.Popen(_recs() + ["serve", "--bundle", str(self.out / "bundle"), "--public-key",
                                             str(self.out / "keys" / "signing_key.pub.pem"), "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited: see {self.out / 'serve.log'}")
            else:
                raise RuntimeError("the server did not become ready within 120 s")
            self.run_cmd("loadtest", ["loadtest", "--url", f"http://127.0.0.1:{port}", "--rate",
                                      str(self.cfg.loadtest_rate), "--duration", str(self.cfg.loadtest_seconds),
                                      "--json"], self.runs / "loadtest.json")
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    def run(self) -> list[StepResult]:
        if self.out.exists():
            shutil.rmtree(self.out)
        self.runs.mkdir(parents=True)
        steps = self.steps()
        for j, (title, fn) in enumerate(steps):
            self.on_step(title, j, len(steps))
            fn()
        self.on_step("done", len(steps), len(steps))
        (self.out / "demo_steps.json").write_text(json.dumps(
            [s.__dict__ for s in self.cfg.steps], indent=2, default=str))
        return self.cfg.steps


