"""`recs serve`: verify a signed bundle and serve it over HTTP (FastAPI on uvicorn)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from recs.cli.common import console, fail


def _check_host(host: str) -> None:
    if not host or any(c.isspace() for c in host):
        fail(f"--host {host!r}: not a host name or address")


def _run_dir(run_dir: Path | None) -> Path:
    """A fresh folder for the journal: a new temporary one, or the given one if empty (never a reused journal)."""
    if run_dir is None:
        return Path(tempfile.mkdtemp(prefix="recs-serve-"))
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        fail(f"--run-dir {run_dir}: must be an empty folder (a journal from another run would be replayed)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir.resolve()


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        bundle: Path = typer.Option(..., "--bundle", help="Signed bundle (folder or .tar.gz) to serve."),
        public_key: Path = typer.Option(
            ..., "--public-key", help="Ed25519 public key (PEM) the bundle must verify with."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
        port: int = typer.Option(8000, "--port", help="TCP port."),
        workers: int = typer.Option(
            1, "--workers", help="Worker processes (each loads the bundle; inventory updates, events and reloads reach "
                                 "all through a shared journal)."),
        admin_token: Optional[str] = typer.Option(
            None, "--admin-token",
            help="Token for POST /admin/reload (default: $RECS_ADMIN_TOKEN; unset: reload disabled)."),
        deadline_ms: float = typer.Option(
            50.0, "--deadline-ms", help="Per-request deadline; the ranker is skipped when retrieval used most of it."),
        shed_in_flight: int = typer.Option(
            64, "--shed-in-flight", help="Serve popular lists when more requests than this are in flight."),
        shed_queue_ms: float = typer.Option(
            30.0, "--shed-queue-ms", help="Serve popular lists to a request that queued longer than this."),
        rank_skip_ms: float = typer.Option(
            20.0, "--rank-skip-ms",
            help="Skip the ranker (retrieval order) when queue pressure exceeds this; 0: never for load."),
        home_ttl: float = typer.Option(30.0, "--home-ttl", help="Seconds a cached home answer (no history) lives."),
        search_ttl: float = typer.Option(
            60.0, "--search-ttl", help="Seconds a cached suggestion answer (no history) lives."),
        audit_log: Optional[Path] = typer.Option(
            None, "--audit-log", help="Append every served slate as JSON lines (testing the filters)."),
        run_dir: Optional[Path] = typer.Option(
            None, "--run-dir", help="--workers N: empty folder for the shared write journal and worker status "
                                    "(default: a new temporary folder, removed at exit)."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve recommendations and search suggestions from a verified bundle."""
        import uvicorn

        from recs.bundle.errors import BundleError
        from recs.bundle.keys import load_public_key
        from recs.bundle.verify import verify_bundle
        from recs.serving.app import create_app
        from recs.serving.runtime import Runtime
        from recs.serving.served import ServeConfig, load_served

        _check_host(host)
        if not 0 < port < 65536:
            fail(f"--port {port}: must be in 1..65535")
        if not 1 <= workers <= 64:
            fail(f"--workers {workers}: must be in 1..64")
        if not bundle.exists():
            fail(f"{bundle}: bundle not found")
        try:
            cfg = ServeConfig(deadline_ms=deadline_ms, shed_in_flight=shed_in_flight, shed_queue_ms=shed_queue_ms,
                              rank_skip_ms=rank_skip_ms, home_ttl_s=home_ttl, search_ttl_s=search_ttl)
            key = load_public_key(public_key)
        except (ValueError, BundleError) as e:
            fail(str(e))
        token = admin_token or os.environ.get("RECS_ADMIN_TOKEN") or None
        if workers > 1:
            # each worker verifies and loads on its own; writes reach all through the journal (docs/SERVING.md)
            try:   # refuse a bad bundle here (exit 1) rather than through N failing workers
                verify_bundle(bundle, key)
            except BundleError as e:
                fail(f"bundle refused: {e}", code=1)
            rd = _run_dir(run_dir)
            os.environ.update(RECS_SERVE_BUNDLE=str(bundle.resolve()), RECS_SERVE_PUBLIC_KEY=str(public_key.resolve()),
                              RECS_SERVE_CONFIG=json.dumps(asdict(cfg)), RECS_SERVE_RUN_DIR=str(rd),
                              RECS_SERVE_WORKERS=str(workers))
            if token:
                os.environ["RECS_ADMIN_TOKEN"] = token
            if audit_log:
                os.environ["RECS_SERVE_AUDIT"] = str(audit_log)
            console.print(f"{workers} workers sharing the write journal in {rd} on http://{host}:{port}",
                          highlight=False)
            try:
                uvicorn.run("recs.serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level=log_level, access_log=False)
            finally:
                if run_dir is None:
                    shutil.rmtree(rd, ignore_errors=True)
            return
        try:
            served = load_served(bundle, key, cfg)
        except BundleError as e:
            fail(f"bundle refused: {e}", code=1)
        except Exception as e:
            fail(f"{bundle}: cannot load the model: {type(e).__name__}: {e}", code=1)
        console.print(f"serving {served.version} ({len(served.state):,} items) on http://{host}:{port}",
                      highlight=False)
        app_ = create_app(Runtime(served, cfg), key, token, audit_log)
        uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False)
