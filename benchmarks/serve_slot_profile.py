"""`bench_serve profile`: the new-item slot's CPU per request."""
from __future__ import annotations


def slot_profile(p, cands, scores, cpu_ms) -> str:
    """The new-item slot's CPU per request at the data's end (timed now, the catalog has no item of the last 48 h),
    with the candidates' state rows looked up beforehand as `Pipeline.rank` has them."""
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    from recs.models.rerank import rerank, with_new_item_slot
    end = datetime.fromtimestamp(int(p.state.created_us.max()) / 1e6, timezone.utc) + timedelta(hours=1)
    cfg, n = replace(p.rerank_cfg, new_item_share=1.0), len(cands)
    rows = [p.state.indices(list(c[0])) for c in cands]
    slates = [rerank(cands[i][0], scores[i], p.state, end, 10, cfg, rows=rows[i]) for i in range(n)]

    def slot(i: int):
        return with_new_item_slot(*slates[i], cands[i][0], scores[i], p.state, end, cfg, rows=rows[i])[0]

    fired = sum(slot(i) is not slates[i][0] for i in range(n))
    return f"  new-item slot (at the data's end) {cpu_ms(slot):.2f}  (filled on {fired} of {n} slates)"
