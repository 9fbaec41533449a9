"""The zero-shot transfer evaluated over HTTP: a new catalogue is written to a running zest server with
``POST /items`` and every test user is ranked with ``POST /recommend`` (their history as item ids, k = 20,
history excluded; the strict view passes its candidates). The server's top-20 lists are scored with the
same metrics as in process (:meth:`.protocols.Split.test_metrics`), so both sets of numbers compare 1:1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .protocols import Split

Post = Callable[[str, dict], dict]  # (path, JSON body) -> JSON answer; raises on a non-2xx status


def upload_items(post: Post, ids: list[str], texts: list[str], batch: int = 500) -> int:
    """POST /items in batches; returns the catalogue size the server reports."""
    total = 0
    for a in range(0, len(ids), batch):
        r = post("/items", {"items": [{"id": i, "text": t} for i, t in zip(ids[a:a + batch], texts[a:a + batch])]})
        total = int(r["total"])
    return total


def _ranked_scores(post: Post, item_ids: list[str], histories: list[np.ndarray], candidates: np.ndarray,
                   k: int, restrict: bool) -> np.ndarray:
    """A (users, candidates) matrix: k, k-1, ... for each user's returned items, -inf elsewhere."""
    col = {item_ids[c]: j for j, c in enumerate(candidates)}
    cand_ids = [item_ids[c] for c in candidates]
    out = np.full((len(histories), len(candidates)), -np.inf)
    for u, h in enumerate(histories):
        body: dict = {"history": [item_ids[i] for i in h], "k": k, "exclude_history": True}
        if restrict:
            body["candidates"] = cand_ids
        got = post("/recommend", body)["items"]
        for rank, item in enumerate(got):
            out[u, col[item["id"]]] = float(k - rank)
    return out


def http_metrics(post: Post, split: Split, item_ids: list[str], k: int = 20) -> dict[str, float]:
    """Test metrics of ``split`` (and its views) from the server's rankings, keyed like ``split.test_metrics``."""
    test = split.test
    full = _ranked_scores(post, item_ids, test.histories, test.candidates, k, restrict=False)
    out = test.mean(full)
    for name, view in split.views.items():
        s = _ranked_scores(post, item_ids, view.task.histories, view.task.candidates, k, restrict=True)
        out.update({f"{name}:{m}": v for m, v in view.task.mean(s).items()})
    return out
