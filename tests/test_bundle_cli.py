"""CLI: recs keygen / export-bundle / verify-bundle exit codes and one-line messages."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import typer
from typer.testing import CliRunner

from recs.cli import bundle_cmd
from _bundle_fixtures import make_model

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    bundle_cmd.register(app)

    @app.callback()
    def _root() -> None:  # keep sub-command names (a single command would become the app itself)
        pass

    return app


def test_keygen_export_verify_roundtrip_and_failures(tmp_path: Path) -> None:
    app = _app()
    r = runner.invoke(app, ["keygen", "--out", str(tmp_path / "k"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    priv, pub = Path(info["private_key"]), Path(info["public_key"])
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 2  # refuses to overwrite

    model = make_model(tmp_path)
    for args in (["--out", str(tmp_path / "b")], ["--out", str(tmp_path / "b.tar.gz"), "--tar"]):
        r = runner.invoke(app, ["export-bundle", "--model", str(model), "--key", str(priv), *args])
        assert r.exit_code == 0, r.output
    for b in ("b", "b.tar.gz"):
        r = runner.invoke(app, ["verify-bundle", str(tmp_path / b), "--public-key", str(pub)])
        assert r.exit_code == 0, r.output
        assert r.stdout.startswith("OK ")

    r = runner.invoke(app, ["verify-bundle", str(tmp_path / "b"), "--public-key", str(pub), "--json"])
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["files"] == 6 and rep["model"]["dataset_fingerprint"] == "sha256:abcd"

    (tmp_path / "b" / "rerank.json").write_text("{}")
    r = runner.invoke(app, ["verify-bundle", str(tmp_path / "b"), "--public-key", str(pub)])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "changed file rerank.json" in lines[0]

    r = runner.invoke(app, ["verify-bundle", str(tmp_path / "b"), "--public-key", str(pub), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False

    # bad input (not a verification failure): exit 2 with a one-line error
    r = runner.invoke(app, ["verify-bundle", str(tmp_path / "b"), "--public-key", str(priv)])
    assert r.exit_code == 2 and "is a private key" in r.output
    r = runner.invoke(app, ["verify-bundle", str(tmp_path / "nope"), "--public-key", str(pub)])
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(app, ["export-bundle", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "c"),
                            "--key", str(priv)])
    assert r.exit_code == 2 and "model folder not found" in r.output
    r = runner.invoke(app, ["export-bundle", "--model", str(model), "--out", str(tmp_path / "c"), "--key", str(pub)])
    assert r.exit_code == 2 and "not a PEM private key" in r.output
