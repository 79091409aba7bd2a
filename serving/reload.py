"""Hot reload: verify and load a bundle off the event loop, swap it in, and (with `--workers N`) on every worker.

The worker that receives `POST /admin/reload` verifies and loads the bundle in a thread while it keeps serving,
swaps it in on the event loop and appends a `reload` record to the shared journal. Every other worker sees that
record at its next journal check (before a request, or within `journal_poll_s` when idle), verifies and loads the
same bundle itself in a thread (never trusting another process's verification), and swaps on its own loop;
each worker publishes the version it serves in `<run_dir>/workers/`. The POST answers once every live worker
serves the new version, or after `reload_wait_s`, saying how many did. A bundle refused by the receiving worker
is never journaled.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from recs.bundle.errors import BundleVerificationError
from recs.serving.journal import JournalWriteError, live_workers
from recs.serving.runtime import Runtime
from recs.serving.served import load_served, settle_heap

log = logging.getLogger("recs.serve")


class Reloader:
    """Reload requests and reloads followed from the journal; one at a time per worker."""

    def __init__(self, runtime: Runtime, public_key: Any, workers: int = 1) -> None:
        self.rt, self.key, self.workers = runtime, public_key, workers
        self.lock = asyncio.Lock()
        # a reload journaled while this worker was starting (seen by its first journal read, before this existed)
        self._pending: tuple[int, dict] | None = runtime.reload_target
        self._tasks: set[asyncio.Task] = set()
        runtime.on_reload = self._on_record

    async def reload(self, bundle: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of one reload request."""
        rt, m = self.rt, self.rt.metrics
        if self.lock.locked():
            return 409, {"error": "a reload is already in progress"}
        async with self.lock:
            old = rt.current.version
            path = str(Path(bundle).resolve())   # other workers must open the same bundle
            try:
                new = await run_in_threadpool(load_served, path, self.key, rt.cfg)
            except BundleVerificationError as e:
                m.reloads.inc("refused")
                return 400, {"error": f"bundle refused, still serving {old}: {e}"}
            except Exception as e:  # verified but not loadable, or not found
                m.reloads.inc("failed")
                return 400, {"error": f"bundle not loaded, still serving {old}: {type(e).__name__}: {e}"}
            try:
                rt.publish_reload(new, path)
            except JournalWriteError as e:   # not journaled, so not swapped: no worker serves it
                new.bundle.close()
                m.reloads.inc("failed")
                m.errors.inc("journal_write")
                log.error("worker %s: reload of %s not journaled: %s", rt.worker_name, path, e)
                return 503, {"error": f"bundle not swapped in, still serving {old}: {e}"}
            m.reloads.inc("ok")
            settle_heap()
        body: dict[str, Any] = {"ok": True, "previous": old, "bundle_version": new.version}
        if rt.journal is not None:
            body["workers"] = await self._wait_workers(new.version)
        return 200, body

    async def _wait_workers(self, version: str) -> dict[str, Any]:
        """Wait until every live worker serves `version` (at most `reload_wait_s`)."""
        deadline = time.monotonic() + self.rt.cfg.reload_wait_s
        while True:
            live = live_workers(self.rt.run_dir) if self.rt.run_dir else {}
            swapped = sum(v == version for v in live.values())
            if swapped >= self.workers or time.monotonic() >= deadline:
                return {"expected": self.workers, "live": len(live), "swapped": swapped,
                        "complete": swapped >= self.workers}
            await asyncio.sleep(0.1)

    def _on_record(self, end: int, rec: dict) -> None:
        """Called by `Runtime.sync` when another worker journaled a reload; started by `poll`."""
        self._pending = (end, rec)

    def poll(self) -> None:
        """Start following a journaled reload, if one is pending (called on the loop every journal poll)."""
        if self._pending is None:
            return
        end, rec = self._pending
        self._pending = None
        task = asyncio.get_running_loop().create_task(self._follow(end, rec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, end: int, rec: dict) -> None:
        rt, m = self.rt, self.rt.metrics
        async with self.lock:
            if rt.reload_target is None or rt.reload_target[0] != end:
                return                                   # superseded by a later reload
            try:
                new = await run_in_threadpool(load_served, rec["bundle"], self.key, rt.cfg)
            except Exception as e:
                m.reloads.inc("follow_failed")
                log.error("worker %s: journaled reload of %s failed, still serving %s: %s", rt.worker_name,
                          rec.get("bundle"), rt.current.version, e)
                return
            if new.version != rec.get("version"):
                new.bundle.close()
                m.reloads.inc("follow_failed")
                log.error("worker %s: %s now holds %s, not the journaled %s; not swapped", rt.worker_name,
                          rec.get("bundle"), new.version, rec.get("version"))
                return
            if rt.adopt_followed(end, new):
                m.reloads.inc("followed")
                settle_heap()
            else:
                new.bundle.close()


async def journal_loop(runtime: Runtime, reloader: Reloader) -> None:
    """Keep an idle worker current: apply other workers' writes and start journaled reloads."""
    while True:
        try:
            runtime.sync()
            reloader.poll()
        except Exception:  # never let the poller die; a broken journal shows in recs_errors_total
            runtime.metrics.errors.inc("journal")
        await asyncio.sleep(runtime.cfg.journal_poll_s)
