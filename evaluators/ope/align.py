"""Align logged impressions with target probabilities in bounded memory: chunk by chunk, on integer codes.

Both inputs are read in chunks of `chunk_rows` rows (a DataFrame is sliced, a LazyFrame is streamed), validated
row by row and reduced to compact numeric arrays at once, so the string columns never exist whole. Request and
item ids are hashed twice (two 64-bit polars hashes; a match needs both to agree, so a false match has
probability ~2^-128) and coded in order of first appearance through a sorted hash table. The cross-row work
(duplicate keys, per-(request, position) sums, the target probability of each logged impression) is done on
sorted int64 keys with numpy: linear when the inputs are grouped by request, as logs and target files usually
are, and a sort when they are not. The result takes 48 bytes per logged impression and 24 per target row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import polars as pl

from recs.evaluators.ope.inputs import (LOG_COLUMNS, MASS_TOL, MAX_POSITION, REWARDS, SURFACE_CODES,
                                        TARGET_COLUMNS, OPEInputError, OPEInputs, check_rows, require_columns)

Frame = pl.DataFrame | pl.LazyFrame
CHUNK_ROWS = 1_000_000


def _batches(frame: Frame, columns: list[str], chunk_rows: int) -> Iterator[tuple[int, pl.DataFrame]]:
    """(offset, chunk) pairs; offsets count rows from 0. A LazyFrame is collected slice by slice (a Parquet scan
    reads only the row groups of each slice, so memory stays at one chunk; `collect_batches` reads ahead)."""
    sel = frame.select(columns)
    if isinstance(sel, pl.DataFrame):
        it = sel.iter_slices(chunk_rows)
    else:
        n = _n_rows(sel)
        it = (sel.slice(off, chunk_rows).collect() for off in range(0, n, chunk_rows))
    offset = 0
    for df in it:
        if df.height:
            yield offset, df
            offset += df.height


def _n_rows(frame: Frame) -> int:
    return frame.height if isinstance(frame, pl.DataFrame) else int(frame.select(pl.len()).collect().item())


def _hashes(col: str, prefix: str) -> list[pl.Expr]:
    s = pl.col(col).cast(pl.Utf8)
    return [s.hash(0).alias(prefix + "h"), s.hash(1).alias(prefix + "g")]


def _runs(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal consecutive values."""
    if len(h) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
    return starts, np.diff(np.append(starts, len(h)))


def _distinct(h: np.ndarray, g: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (h, g) in order of first appearance: the row of each one's first appearance, and each row's index
    among them. Equal h with different g (two ids, one 64-bit hash: ~1e-8 at a million ids) is an error."""
    order = np.argsort(h, kind="stable")
    hs = h[order]
    new = np.concatenate(([True], hs[1:] != hs[:-1])) if len(h) else np.zeros(0, bool)
    grp = np.cumsum(new) - 1
    first = order[new]
    if np.any(g[order] != g[first][grp]):
        raise OPEInputError(f"two {what} ids share a 64-bit hash; rename one of them")
    by_appearance = np.argsort(first, kind="stable")
    rank = np.empty(len(first), np.int64)
    rank[by_appearance] = np.arange(len(first))
    inverse = np.empty(len(h), np.int64)
    inverse[order] = rank[grp]
    return first[by_appearance], inverse


class _Codes:
    """A growing map from (hash, hash2) to dense codes in order of first appearance."""

    def __init__(self, what: str, h: np.ndarray | None = None, g: np.ndarray | None = None) -> None:
        """Empty, or coding the distinct `h` (with their `g`) in the given order."""
        self.what = what
        self.h, self.g, self.code = np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
        if h is not None:
            self._insert(h, g)

    @property
    def size(self) -> int:
        return len(self.h)

    def _insert(self, h: np.ndarray, g: np.ndarray) -> None:
        new = np.arange(self.size, self.size + len(h), dtype=np.int64)
        order = np.argsort(h, kind="stable")
        at = np.searchsorted(self.h, h[order])
        self.h, self.g = np.insert(self.h, at, h[order]), np.insert(self.g, at, g[order])
        self.code = np.insert(self.code, at, new[order])
        if np.any(self.h[1:] == self.h[:-1]):
            raise OPEInputError(f"two {self.what} ids share a 64-bit hash; rename one of them")

    def lookup(self, h: np.ndarray, g: np.ndarray, runs: bool = False) -> np.ndarray:
        """Code of each (h, g), -1 if absent; with `runs`, one search per run of equal h (grouped inputs)."""
        if runs:
            starts, lengths = _runs(h)
            return np.repeat(self.lookup(h[starts], g[starts]), lengths)
        if self.size == 0:
            return np.full(len(h), -1, np.int64)
        if self.size > 1 << 16 and len(h) > 1 << 12:  # random probes of a large table: sort them first
            order = np.argsort(h)
            i = np.empty(len(h), np.int64)
            i[order] = np.searchsorted(self.h, h[order])
        else:
            i = np.searchsorted(self.h, h)
        i = np.minimum(i, self.size - 1)
        return np.where((self.h[i] == h) & (self.g[i] == g), self.code[i], -1)

    def add(self, h: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes of every (h, g), adding unseen ones; also the row of each added key's first appearance."""
        codes = self.lookup(h, g)
        miss = np.flatnonzero(codes < 0)
        if len(miss) == 0:
            return codes, miss
        first, inverse = _distinct(h[miss], g[miss], self.what)
        rows = miss[first]
        codes[miss] = self.size + inverse
        self._insert(h[rows], g[rows])
        return codes, rows


@dataclass
class _Logs:
    req_idx: np.ndarray
    position: np.ndarray
    item_code: np.ndarray
    pscore: np.ndarray
    reward: np.ndarray
    requests: pl.DataFrame   # request_id, surface, anon, slate_p in code order
    req_codes: _Codes
    items: _Codes
    item_names: list[str]
    n_items: int             # items in the logs; codes >= n_items are items only a target mentions


def _request_attrs(extra: list[str]) -> list[pl.Expr]:
    return [pl.col("request_id").cast(pl.Utf8),
            (pl.col("surface").cast(pl.Utf8).replace_strict(SURFACE_CODES, default=-1, return_dtype=pl.Int8)
             if "surface" in extra else pl.lit(-1, pl.Int8)).alias("surface"),
            (pl.col("user_id").is_null() if "user_id" in extra else pl.lit(False)).alias("anon"),
            (pl.col("slate_propensity").cast(pl.Float64) if "slate_propensity" in extra
             else pl.lit(None, pl.Float64)).alias("slate_p"),
            pl.coalesce(*[pl.lit(f"{tag}:") + pl.col(c).cast(pl.Utf8) for c, tag in (("user_id", "u"),
                                                                                    ("session_id", "s"))
                          if c in extra], pl.lit("r:") + pl.col("request_id").cast(pl.Utf8)).alias("unit")]


def _read_logs(logs: Frame, reward: str, source: str, chunk_rows: int) -> _Logs:
    if reward not in REWARDS:
        raise OPEInputError(f"--reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    schema = logs.collect_schema()
    require_columns(schema, [*LOG_COLUMNS, reward], source)
    extra = [c for c in ("surface", "user_id", "session_id", "slate_propensity") if c in schema]
    n = _n_rows(logs)
    item_code, pos = np.empty(n, np.int32), np.empty(n, np.int32)
    p, y = np.empty(n, np.float64), np.empty(n, np.float64)
    items = _Codes("item")
    # requests: per chunk, its distinct requests (one per run when the logs are grouped by request) and how
    # its rows map to them; coded once at the end
    req_h, req_g, req_rows, req_map, item_names = [], [], [], [], []
    end = 0
    for off, df in _batches(logs, [*LOG_COLUMNS, reward, *extra], chunk_rows):
        check_rows(df, off, source, keys=("request_id", "position", "item_id"),
                   ranges={"propensity": (0.0, 1.0, True), reward: (-np.inf, np.inf, False)})
        c = df.select(*_hashes("request_id", "r"), *_hashes("item_id", "i"))
        end = off + df.height
        rh, rg = c["rh"].to_numpy(), c["rg"].to_numpy()
        starts, lengths = _runs(rh)
        if len(starts) <= df.height // 2:
            first, mapping = starts, ("runs", lengths)
        else:
            first, inverse = _distinct(rh, rg, "request")
            mapping = ("inverse", inverse)
        req_h.append(rh[first])
        req_g.append(rg[first])
        req_rows.append(df[first].select(_request_attrs(extra)))
        req_map.append(mapping)
        codes, new = items.add(c["ih"].to_numpy(), c["ig"].to_numpy())
        item_code[off:end] = codes
        item_names += df["item_id"].cast(pl.Utf8).gather(new).to_list()
        pos[off:end] = df["position"].to_numpy()
        p[off:end] = df["propensity"].cast(pl.Float64).to_numpy()
        y[off:end] = df[reward].cast(pl.Float64).to_numpy()
    if end == 0:
        raise OPEInputError(f"{source}: no logged impressions")
    first, code = _distinct(np.concatenate(req_h), np.concatenate(req_g), "request")
    requests = pl.concat(req_rows)[first]
    reqs = _Codes("request", np.concatenate(req_h)[first], np.concatenate(req_g)[first])
    del req_h, req_g, req_rows
    req_idx, row, at = np.empty(end, np.int64), 0, 0
    for kind, m in req_map:  # each chunk's rows -> its distinct requests -> their codes
        k = len(m) if kind == "runs" else int(m.max()) + 1
        rows = np.repeat(code[at:at + k], m) if kind == "runs" else code[at:at + k][m]
        req_idx[row:row + len(rows)] = rows
        row, at = row + len(rows), at + k
    item_code, pos, p, y = (a[:end] for a in (item_code, pos, p, y))
    _check_unique(req_idx * MAX_POSITION + pos, lambda k, row: (
        f"{source}: row {row + 1}: duplicate (request_id={requests['request_id'][k // MAX_POSITION]!r}, "
        f"position={k % MAX_POSITION})"))
    return _Logs(req_idx, pos, item_code, p, y, requests, reqs, items, item_names, items.size)


def _check_unique(key: np.ndarray, message) -> None:
    """Raise OPEInputError(message(key, row)) at the first row whose key repeats an earlier one."""
    if len(key) < 2 or np.all(key[1:] > key[:-1]):
        return
    order = np.argsort(key, kind="stable")
    ks = key[order]
    dup = np.flatnonzero(ks[1:] == ks[:-1])
    if len(dup):
        row = int(order[dup + 1].min())
        raise OPEInputError(message(int(key[row]), row))


@dataclass
class _Target:
    """Target rows (prob > 0) on logged requests, sorted by (request, position, item), with per-cell sums."""

    key: np.ndarray        # (M,) int64 (request * P + position) * V + item code, increasing
    prob: np.ndarray       # (M,)
    cell: np.ndarray       # (C,) increasing distinct request * P + position
    cell_mass: np.ndarray  # (C,)
    dropped: int           # rows (prob > 0) of requests absent from the logs


def _read_target(target: Frame, lg: _Logs, source: str, chunk_rows: int) -> tuple:
    """(request code, position, item code, prob) of the rows with prob > 0 on logged requests, and the number of
    such rows on other requests."""
    require_columns(target.collect_schema(), TARGET_COLUMNS, source)
    n = _n_rows(target)
    req, pos, code, prob = (np.empty(n, t) for t in (np.int64, np.int32, np.int32, np.float64))
    m = dropped = 0
    for off, df in _batches(target, list(TARGET_COLUMNS), chunk_rows):
        check_rows(df, off, source, keys=("request_id", "position", "item_id"), ranges={"prob": (0.0, 1.0, False)})
        df = df.filter(pl.col("prob") > 0)
        h = df.select(*_hashes("request_id", "r"))
        r = lg.req_codes.lookup(h["rh"].to_numpy(), h["rg"].to_numpy(), runs=True)
        keep = np.flatnonzero(r >= 0)
        dropped += df.height - len(keep)
        if len(keep) < df.height:
            df, r = df[keep], r[keep]
        h = df.select(*_hashes("item_id", "i"))
        c, new = lg.items.add(h["ih"].to_numpy(), h["ig"].to_numpy())
        lg.item_names += df["item_id"].cast(pl.Utf8).gather(new).to_list()
        k = len(r)
        req[m:m + k], pos[m:m + k], code[m:m + k] = r, df["position"].to_numpy(), c
        prob[m:m + k] = df["prob"].cast(pl.Float64).to_numpy()
        m += k
    return req[:m], pos[:m], code[:m], prob[:m], dropped


def _finish_target(raw: list, lg: _Logs, P: int, V: int, source: str) -> _Target:
    """Sort the rows by key (consuming `raw`), then check duplicates and per-(request, position) sums."""
    req, pos, code, prob, dropped = raw
    key = req * P  # in place from here: fresh large arrays cost page faults
    key += pos
    key *= V
    key += code
    raw.clear()
    del req, pos, code
    if len(key) > 1 and not np.all(key[1:] > key[:-1]):
        order = np.argsort(key, kind="stable")
        key = key[order]
        prob = prob[order]
        del order
        dup = np.flatnonzero(key[1:] == key[:-1])
        if len(dup):
            k = int(key[dup[0]])
            raise OPEInputError(f"{source}: duplicate (request_id={_rid(lg, k // V // P)!r}, position={k // V % P}, "
                                f"item_id={lg.item_names[k % V]!r})")
    cells = key // V
    starts, _ = _runs(cells)
    mass = np.add.reduceat(prob, starts) if len(prob) else np.zeros(0)
    bad = np.flatnonzero(mass > 1 + MASS_TOL)
    if len(bad):
        c = int(cells[starts[bad[0]]])
        raise OPEInputError(f"{source}: field prob: probabilities of request_id={_rid(lg, c // P)!r} at position "
                            f"{c % P} sum to {mass[bad[0]]:.6g} > 1")
    return _Target(key, prob, cells[starts], mass, dropped)


def _rid(lg: _Logs, code: int) -> str:
    return lg.requests["request_id"][int(code)]


def _isin(keys: np.ndarray, members: np.ndarray, size: int) -> np.ndarray:
    """Membership of non-negative int keys < `size` in `members`: a bitmap when small, else by sorting."""
    if size <= 1 << 26:
        seen = np.zeros(size, dtype=bool)
        seen[members] = True
        return seen[keys]
    return np.isin(keys, members)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """values at `keys` in `sorted_keys` (0 where absent)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys))
    i = np.searchsorted(sorted_keys, keys)
    np.minimum(i, len(sorted_keys) - 1, out=i)
    absent = sorted_keys[i] != keys
    out = values[i]
    out[absent] = 0.0
    return out


def build_inputs(logs: Frame, target: Frame, reward: str = "clicked", logs_source: str = "logs",
                 target_source: str = "target-probs", logger_probs: Frame | None = None,
                 dm_target: Frame | None = None, chunk_rows: int = CHUNK_ROWS) -> OPEInputs:
    """Validate and align logs (canonical impressions) with target probabilities (DataFrames or LazyFrames).

    `target` must give the exact target probability of every logged (request, position, item) (absent: 0).
    `dm_target` (optional, same columns) represents the target's whole distribution for the direct method and
    the support diagnostics when `target` does not (exact probabilities, or sampled slates with prob
    1 / n_samples, which keeps DM and DR unbiased as they are linear in the target probabilities).
    `logger_probs` (optional) gives the logger's full slot probabilities; with it the target mass where the
    logger's probability is 0 is measured exactly. Target rows of requests absent from the logs are ignored
    (counted in `dropped_target_rows`); duplicates and per-(request, position) sums are checked on the others.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    lg = _read_logs(logs, reward, logs_source, chunk_rows)
    sources = {"t": (target, target_source)}
    if dm_target is not None:
        sources["dm"] = (dm_target, f"{target_source} (DM rows)")
    if logger_probs is not None:
        sources["lp"] = (logger_probs, "logger-probs")
    raw = {k: list(_read_target(f, lg, s, chunk_rows)) for k, (f, s) in sources.items()}
    P = 1 + max([int(lg.position.max())] + [int(v[1].max()) for v in raw.values() if len(v[1])])
    V, R = lg.items.size, lg.requests.height
    if R * P * V >= 2 ** 62:
        raise OPEInputError(f"{logs_source}: {R:,} requests x {P:,} positions x {V:,} items is too large for one "
                            "run; split the logs by time or request")
    tg = {k: _finish_target(v, lg, P, V, sources[k][1]) for k, v in raw.items()}
    t, dm, dropped = tg["t"], tg.get("dm", tg["t"]), tg["t"].dropped
    lkey = lg.req_idx * P
    lkey += lg.position
    mass = _lookup(dm.cell, dm.cell_mass, lkey)
    lkey *= V
    lkey += lg.item_code
    target_prob = _lookup(t.key, t.prob, lkey)
    del lkey
    total = float(dm.prob.sum())
    zero_mass = None
    if "lp" in tg:
        zero_mass = float(dm.prob[_lookup(tg["lp"].key, np.ones(len(tg["lp"].key)), dm.key) == 0].sum())
    del tg, t
    key, dm.key, dm.cell = dm.key, None, None
    t_req = key // V  # then in place where possible: fresh large arrays cost page faults
    np.remainder(key, V, out=key)
    t_code = key.astype(np.int32)
    del key
    t_pos = np.empty(len(t_req), np.int32)
    np.remainder(t_req, P, out=t_pos, casting="unsafe")
    np.floor_divide(t_req, P, out=t_req)
    n_logged = lg.n_items
    logged_item = t_code < n_logged
    t_pair = t_pos.astype(np.int64)
    t_pair *= n_logged
    t_pair += np.minimum(t_code, n_logged - 1)
    l_pair = lg.position.astype(np.int64)
    l_pair *= n_logged
    l_pair += lg.item_code
    unseen_pair = ~logged_item | ~_isin(t_pair, l_pair, P * n_logged)
    del t_pair, l_pair
    t_code[~logged_item] = -1
    slate = None
    if lg.requests["slate_p"].null_count() < R:
        slate = lg.requests["slate_p"].fill_null(np.nan).to_numpy()
    unit = lg.requests["unit"].rank("dense").cast(pl.Int64).to_numpy() - 1
    unit = unit if len(unit) and int(unit.max()) + 1 < R else None     # None: every request its own unit
    return OPEInputs(
        request_ids=lg.requests["request_id"].to_numpy(),
        req_surface=lg.requests["surface"].to_numpy().astype(np.int8),
        req_anonymous=lg.requests["anon"].to_numpy().astype(bool),
        req_idx=lg.req_idx, position=lg.position, item_code=lg.item_code, pscore=lg.pscore,
        target_prob=target_prob, target_mass=np.minimum(mass, 1.0), reward=lg.reward,
        t_req_idx=t_req, t_position=t_pos, t_item_code=t_code, t_prob=dm.prob, slate_pscore=slate,
        reward_name=reward, n_items=n_logged, target_mass_total=total,
        unlogged_position_mass=max(total - float(mass.sum()), 0.0),
        unseen_pair_mass=float(dm.prob[unseen_pair].sum()),
        unseen_item_mass=float(dm.prob[~logged_item].sum()),
        zero_propensity_mass=zero_mass, dropped_target_rows=dropped, req_unit=unit,
    )
