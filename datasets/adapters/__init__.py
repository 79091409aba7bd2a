"""Adapters from public dataset layouts to the canonical tables.

- `obd`: Open Bandit Dataset CSV -> impressions (`read_obd_csv`).
- `recbole_atomic`: RecBole atomic files (`.inter`, `.item`, `.user`) -> interactions, catalog, users.
- `sessions`: anonymous session item-view logs (DIGINETICA layout) -> interactions.

Each adapter has a `scan_*` used by `recs ingest --format ...` (raw canonical columns, validated and quarantined
by the ingest pipeline like any input) and a `read_*` convenience that returns a validated canonical frame.
"""
