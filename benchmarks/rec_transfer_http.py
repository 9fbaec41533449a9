"""Serve a new catalogue with the same model: ml-100k's items go into an empty zest server (POST /items) and
each ml-100k test user is ranked over HTTP (POST /recommend); the result must equal the in-process transfer.

    python3 benchmarks/rec_transfer_http.py                # every ml-100k user -> results/rec_transfer_http.json
    python3 benchmarks/rec_transfer_http.py --users 100    # the first 100 users (a quick check)

The server is the real one (`bentoml serve`, zest-tiny CLIP, the shipped ZESRec or --model) on loopback with
a fresh data dir; the split is `zest rec eval --transfer`'s (training/rec/transfer.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.environment import env_info
from benchmarks.harness.report import write_results
from benchmarks.harness.servers import serve


def main(argv: list[str] | None = None) -> int:
    import requests

    from zest.models.rec.text import TextEncoder
    from zest.models.rec.zesrec import load
    from zest.service.recommender import shipped_model_dir
    from zest.training.rec.data import load_movielens
    from zest.training.rec.ml100k import load_ml100k
    from zest.training.rec.transfer import git_commit, model_scores, transfer_split
    from zest.training.rec.transfer_http import http_metrics, upload_items

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=None, help="only the first N ml-100k users")
    p.add_argument("--model", default=None, help="ZESRec model directory [the shipped checkpoint]")
    p.add_argument("--data-cache", default=None, help="where recbole's wheel (ml-100k) is kept")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    model_dir = args.model or str(shipped_model_dir())
    encoder = TextEncoder()
    model = load(model_dir, encoder=encoder)
    target = load_ml100k(args.data_cache)
    split = transfer_split(target, load_movielens(root / "data" / "ml-latest-small").titles, encoder, args.seed,
                           args.users)
    t0 = time.perf_counter()
    in_process = split.test_metrics(model_scores(model, split.input_emb, split.test))
    t_in = time.perf_counter() - t0
    session = requests.Session()

    with tempfile.TemporaryDirectory(prefix="zest-transfer-") as tmp, \
            serve({"ZEST_DATA_DIR": str(Path(tmp) / "data"), "ZEST_REC_MODEL": model_dir}, "transfer") as srv:

        def post(path: str, body: dict) -> dict:
            r = session.post(f"{srv.url}{path}", json=body, timeout=300)
            if r.status_code != 200:
                raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
            return r.json()

        t0 = time.perf_counter()
        total = upload_items(post, target.catalog.ids, target.catalog.texts)
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        over_http = http_metrics(post, split, target.catalog.ids)
        t_http = time.perf_counter() - t0
    diff = {k: abs(over_http[k] - in_process[k]) for k in in_process}
    payload = {
        "what": "ml-100k zero-shot transfer of the ZESRec model, over HTTP vs in process",
        "model": model_dir, "commit": git_commit(root), "users": args.users, "split": split.info,
        "catalogue_items": total, "in_process": in_process, "http": over_http, "max_abs_diff": max(diff.values()),
        "seconds": {"in_process": round(t_in, 1), "upload": round(t_up, 1), "http_rankings": round(t_http, 1)},
        "environment": env_info(),
    }
    print({k: (round(in_process[k], 4), round(over_http[k], 4)) for k in in_process})
    print(f"max |http - in process| = {payload['max_abs_diff']:.2e}")
    write_results("rec_transfer_http", payload, quick=args.users is not None)
    return 0 if payload["max_abs_diff"] < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
