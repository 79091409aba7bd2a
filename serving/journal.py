"""Cross-worker propagation of live writes: one append-only JSON-lines journal that every worker applies.

`recs serve --workers N` runs N uvicorn processes that share no memory. Every write that changes what a request
may see (an inventory update, a session event, a bundle reload) is appended to `journal.jsonl` in the server's
run directory, under an exclusive `flock`, by the worker that received it; before handling any request (and
every 50 ms when idle) each worker compares the file's size with how far it has read (one `fstat`, ~1 us) and
applies the records it has not seen yet, in file order. All workers therefore apply the same writes in the same
order. The POST is answered only after `os.write` of its record returned, i.e. once the record is in the kernel's
page cache: visible to every process on the host and kept if the writing worker dies (`fsync=True` additionally
forces it to disk; not the default, because the journal is not replayed after the whole server restarts: a
restart begins a new run directory). A request that reaches any worker after the POST's response therefore
sees the write. A worker that uvicorn restarts after a crash replays the journal from the start.

Records: `{"op": "inv", "kind", "key", "value", "ts", "attrs"}`, `{"op": "ev", "user", "session", "item",
"kind"}`, `{"op": "reload", "bundle", "version"}` (timestamps as ISO 8601 strings).
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

JOURNAL_NAME = "journal.jsonl"
STATUS_DIR = "workers"


class JournalWriteError(OSError):
    """A record could not be appended to the journal; the write it carried must not be applied."""


class Journal:
    """An append-only JSON-lines file shared by the worker processes; `offset` = bytes this process applied."""

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self.offset = 0
        self.corrupt = 0          # lines that did not parse (a writer killed mid-line); skipped

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def pending(self) -> bool:
        """Whether other processes appended records this one has not read (the per-request check)."""
        return os.fstat(self._fd).st_size > self.offset

    def read_new(self) -> list[tuple[int, dict[str, Any]]]:
        """Complete records after `offset` as (end offset, record); a trailing partial line is left for later."""
        size = self.size()
        if size <= self.offset:
            return []
        data = os.pread(self._fd, size - self.offset, self.offset)
        last = data.rfind(b"\n")
        if last < 0:
            return []
        out: list[tuple[int, dict[str, Any]]] = []
        pos = self.offset
        for line in data[:last + 1].splitlines(keepends=True):
            pos += len(line)
            try:
                rec = json.loads(line)
            except ValueError:
                self.corrupt += 1
                continue
            if isinstance(rec, dict):
                out.append((pos, rec))
            else:
                self.corrupt += 1
        self.offset = pos
        return out

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock across processes, held while a writer catches up, validates and appends."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def append(self, rec: dict[str, Any]) -> int:
        """Append one record; the caller holds `locked()` and has applied everything up to the end of the file.

        Returns the record's end offset (this process's new `offset`). Raises `JournalWriteError` when the record
        is not (wholly) in the file: nothing was written (disk full), or only a prefix without its newline, which
        no reader applies and the next append terminates (a torn line). After an `fsync` failure (with
        `fsync=True`) the whole line is in the file: every worker applies it, this one at its next `sync`."""
        line = (json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n").encode()
        try:
            size = self.size()
            if size != self.offset:   # a partial line (a writer that died mid-write, a short write): end it first
                if os.write(self._fd, b"\n") != 1:
                    raise JournalWriteError(f"{self.path}: short write to the journal (0 of 1 bytes)")
                self.corrupt += 1
                self.offset = size = size + 1      # the torn line, now ended, is skipped like any unparsable one
            n = os.write(self._fd, line)
            if n != len(line):
                raise JournalWriteError(f"{self.path}: short write to the journal ({n} of {len(line)} bytes)")
            if self.fsync:
                os.fsync(self._fd)
        except JournalWriteError:
            raise
        except OSError as e:
            raise JournalWriteError(f"{self.path}: cannot append to the journal ({e.strerror or e})") from e
        self.offset = size + n
        return self.offset

    def last_reload(self) -> tuple[int, dict[str, Any]] | None:
        """The last reload record in the whole file (a restarted worker loads that bundle first) and its end offset."""
        found = None
        pos = 0
        with open(self.path, "rb") as f:
            for line in f:
                pos += len(line)
                if not line.endswith(b"\n"):
                    break
                if b'"op":"reload"' in line:
                    try:
                        found = (pos, json.loads(line))
                    except ValueError:
                        continue
        return found


def inventory_record(kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> dict:
    """An inventory update as a journal record."""
    a = None
    if attrs is not None:
        a = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in attrs.items()}
    return {"op": "inv", "kind": kind, "key": key, "value": value, "ts": ts.isoformat() if ts else None, "attrs": a}


def decode_inventory(rec: dict) -> tuple[str, str, float, datetime | None, dict | None]:
    """(kind, key, value, ts, attrs) of an inventory record."""
    ts = datetime.fromisoformat(rec["ts"]) if rec.get("ts") else None
    attrs = rec.get("attrs")
    if attrs is not None and attrs.get("created_at"):
        attrs = {**attrs, "created_at": datetime.fromisoformat(attrs["created_at"])}
    return rec["kind"], rec["key"], float(rec["value"]), ts, attrs


def event_record(user_id: str | None, session_id: str, item_id: str, kind: str) -> dict:
    return {"op": "ev", "user": user_id, "session": session_id, "item": item_id, "kind": kind}


def write_status(run_dir: Path, name: str, version: str, offset: int) -> None:
    """A worker's current bundle version, written atomically to `<run_dir>/workers/<name>.json`."""
    d = run_dir / STATUS_DIR
    d.mkdir(exist_ok=True)
    tmp = d / f".{name}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "version": version, "journal_offset": offset}))
    os.replace(tmp, d / f"{name}.json")


def live_workers(run_dir: Path) -> dict[str, str]:
    """{worker name: bundle version} of the workers whose process is still alive, from their status files."""
    out: dict[str, str] = {}
    d = run_dir / STATUS_DIR
    if not d.is_dir():
        return out
    for f in d.glob("*.json"):
        try:
            st = json.loads(f.read_text())
            os.kill(int(st["pid"]), 0)
        except (OSError, ValueError, KeyError):
            continue
        out[f.stem] = st["version"]
    return out
