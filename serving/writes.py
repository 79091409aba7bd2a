"""Live writes of the serving runtime: inventory updates, session events, other workers' writes, bundle adoption.

Without a journal a write is applied at once. With one (`--workers N`, serving/journal.py) a write is, under the
journal's lock: checked against the current state without changing it (a bad one raises KeyError / ValueError
and is never written), appended to the journal, and only then applied. An append that fails (disk full, short
write) raises `JournalWriteError` before anything changed, in this worker or any other: the client gets an error
(serving/app.py) and no worker serves the write. A reload is journaled the same way: the new bundle is prepared
(live state carried onto it, which changes only the new bundle), the `reload` record appended, then swapped in.
"""
from __future__ import annotations

from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Callable

from recs.features.online import attrs_from_state
from recs.serving.journal import Journal, decode_inventory, event_record, inventory_record, write_status
from recs.serving.metrics import ServerMetrics
from recs.serving.served import ServeConfig, Served


class LiveWrites:
    """The write half of `serving.runtime.Runtime` (which sets these attributes in its constructor)."""

    current: Served
    cfg: ServeConfig
    metrics: ServerMetrics
    inventory_log: deque[tuple[str, str, float, datetime | None, dict | None]]
    inventory_dropped: int
    journal: Journal | None
    run_dir: Path | None
    worker_name: str
    reload_skip_until: int
    reload_target: tuple[int, dict] | None
    on_reload: Callable[[int, dict], None] | None

    def attach_journal(self, journal: Journal, run_dir: str | Path, reload_skip_until: int = 0,
                       worker_name: str | None = None) -> None:
        """Share writes with the other worker processes through `journal`; catch up on what it already holds.

        The app publishes the worker's status once it serves (lifespan start)."""
        self.journal, self.run_dir = journal, Path(run_dir)
        self.reload_skip_until = reload_skip_until
        if worker_name:
            self.worker_name = worker_name
        self.sync()

    # ---- this worker's writes ----------------------------------------------------------------------------------
    def apply_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> int:
        """Apply one update to the live state (raises KeyError / ValueError on bad input); returns the new version.

        With a journal: under its lock, catch up with the other workers, check the update (a bad one raises before
        anything is written), append it (`JournalWriteError` when that fails: nothing changed), then apply it; the
        caller answers only after the record is in the shared file."""
        j = self.journal
        if j is None:
            return self._apply_inventory(kind, key, value, ts, attrs)
        with j.locked():
            self.sync()
            self.current.state.check_inventory(kind, key, value, ts, attrs)
            j.append(inventory_record(kind, key, value, ts, attrs))
            return self._apply_inventory(kind, key, value, ts, attrs)

    def record_event(self, user_id: str | None, session_id: str, item_id: str, kind: str) -> None:
        """Record a session event (journaled like inventory updates when workers share one)."""
        j = self.journal
        if j is None:
            self._record_event(user_id, session_id, item_id, kind)
            return
        with j.locked():
            self.sync()
            self._check_event(item_id)
            j.append(event_record(user_id, session_id, item_id, kind))
            self._record_event(user_id, session_id, item_id, kind)

    def _apply_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> int:
        served = self.current
        appended = kind == "new_item" and key not in served.state.index
        served.state.apply_inventory(kind, key, value, ts, attrs)
        if appended:
            served.pipeline.attrs = attrs_from_state(served.state)  # the state replaced its arrays
            served.pipeline.index_new_items([key])  # the content retriever can suggest it at once (no refit)
        for cache in served.caches.values():
            if kind == "blocked_seller" or appended:
                cache.clear()                 # may change any answer
            else:
                cache.invalidate_items((key,))
        self._log_inventory(kind, key, value, ts, attrs)
        self.metrics.inventory.inc(kind)
        return served.state.version

    def _log_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> None:
        """Keep an update for `adopt` to replay onto the next bundle (the oldest is dropped, and counted, when full)."""
        if len(self.inventory_log) == self.inventory_log.maxlen:
            self.inventory_dropped += 1
        self.inventory_log.append((kind, key, value, ts, attrs))

    def _check_event(self, item_id: str) -> None:
        if item_id not in self.current.state.index:
            raise KeyError(f"item_id: unknown item {item_id!r}")

    def _record_event(self, user_id: str | None, session_id: str, item_id: str, kind: str) -> None:
        self._check_event(item_id)
        self.current.state.record_event(user_id, session_id, item_id, kind)
        self.metrics.events.inc(kind)

    # ---- other workers' writes ---------------------------------------------------------------------------------
    def sync(self) -> None:
        """Apply the writes other workers appended to the journal since the last call (one fstat when none)."""
        j = self.journal
        if j is None or not j.pending():
            return
        for end, rec in j.read_new():
            op = rec.get("op")
            try:
                if op == "inv":
                    self._sync_inventory(*decode_inventory(rec))
                elif op == "ev":
                    self._record_event(rec["user"], rec["session"], rec["item"], rec["kind"])
                elif op == "reload":
                    if end <= self.reload_skip_until:
                        continue
                    self.reload_target = (end, rec)
                    if self.on_reload is not None:
                        self.on_reload(end, rec)
                else:
                    raise ValueError(f"unknown journal op {op!r}")
                self.metrics.journal.inc(str(op))
            except Exception:   # e.g. an item this bundle's catalog does not have: count it, apply the rest
                self.metrics.errors.inc("journal")

    def _sync_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> None:
        """Apply another worker's update. One this bundle cannot take (e.g. an item only the bundle this worker is
        still loading has) is still logged, so `adopt` replays it after the swap; the error is counted (re-raised)."""
        try:
            self._apply_inventory(kind, key, value, ts, attrs)
        except (KeyError, ValueError):
            self._log_inventory(kind, key, value, ts, attrs)
            raise

    # ---- reloads -----------------------------------------------------------------------------------------------
    def publish_reload(self, new: Served, bundle: str) -> None:
        """Adopt `new` (loaded by this worker) and, with a journal, tell the other workers to load it too.

        The `reload` record is appended before the swap: if the append fails (`JournalWriteError`) this worker
        keeps serving its bundle, no other worker hears of `new`, and the caller closes `new`."""
        j = self.journal
        if j is None:
            self.adopt(new)
            return
        with j.locked():
            self.sync()
            self._carry(new)
            end = j.append({"op": "reload", "bundle": bundle, "version": new.version})
            self._swap(new)
            self.reload_skip_until, self.reload_target = end, None
        self.publish_status()

    def adopt_followed(self, end: int, new: Served) -> bool:
        """Adopt a bundle another worker journaled at offset `end`, unless a later reload superseded it."""
        self.sync()
        if self.reload_target is None or self.reload_target[0] != end:
            return False
        self.adopt(new)
        self.reload_skip_until, self.reload_target = end, None
        self.publish_status()
        return True

    def publish_status(self) -> None:
        """Write this worker's bundle version to the run directory (read by /admin/reload on any worker); a failed
        write is counted in `recs_errors_total{stage="status"}` (a reload then waits for this worker in vain)."""
        if self.run_dir is not None and self.journal is not None:
            try:
                write_status(self.run_dir, self.worker_name, self.current.version, self.journal.offset)
            except OSError:
                self.metrics.errors.inc("status")

    def adopt(self, new: Served) -> None:
        """Carry live state onto a freshly loaded bundle, then make it current (one reference assignment)."""
        self._carry(new)
        self._swap(new)

    def _carry(self, new: Served) -> None:
        """Re-apply the live inventory log to `new` and hand it the session and user histories (bounds and eviction
        counts included). Changes only `new`."""
        old = self.current
        for kind, key, value, ts, attrs in self.inventory_log:
            try:
                new.state.apply_inventory(kind, key, value, ts, attrs)
            except (KeyError, ValueError):
                continue  # an item the new catalog does not have
        new.pipeline.attrs = attrs_from_state(new.state)
        new.pipeline.index_new_items([k for kind, k, *_ in self.inventory_log if kind == "new_item"])
        new.state.session_history = old.state.session_history
        new.state.user_history = old.state.user_history
        new.state.user_purchases = old.state.user_purchases

    def _swap(self, new: Served) -> None:
        old = self.current
        self.current = new
        old.bundle.close()
