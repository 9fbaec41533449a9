"""Vector store: search latency and recall@10 against exact, delete time and ingest rate, per backend.

In process (no HTTP), on synthetic vectors shaped like embeddings: unit vectors around --clusters centres
with low intrinsic dimension (a 16-d latent per point plus small isotropic noise); queries are stored points
plus noise. Measured:

  embedded-exact   EmbeddedStore scanning every row (what serves below ZEST_ANN_MIN_ROWS)
  embedded-ivf     the same store once its faiss IVF index is built; one line per --nprobe value
  rec-ivf          the recommender's case: --rec-dim-d item rows [v, b] with a content-bias column and inner
                   product (not cosine) against users [u, 1]
  milvus-lite      MilvusStore on a milvus-lite file (FLAT index), at --milvus-n vectors (milvus-lite is
                   for development; a Milvus cluster is measured where one runs)

Recall@10 is |ANN top-10 ∩ exact top-10| / 10, averaged over queries. Delete time: single-id deletes of
random live items, each its own transaction (fsync'd). /recommend over HTTP at 1M: benchmarks/bench_rec.py
(its server now searches the catalogue through the store).

    python3 benchmarks/bench_store.py                  # 1M vectors (needs ~6 GB RAM, minutes to build)
    python3 benchmarks/bench_store.py --n 100000       # a modest run
    python3 benchmarks/bench_store.py --quick          # 20k, smoke
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.environment import env_info, warn_if_busy  # noqa: E402
from benchmarks.harness.report import check_target, print_table, print_targets, write_results  # noqa: E402
from benchmarks.harness.timing import latency_ms  # noqa: E402


def make_vectors(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    basis = rng.normal(size=(16, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        z = rng.normal(size=(b - a, 16)).astype(np.float32)
        x = centres[rng.integers(0, clusters, b - a)] + 0.6 * z @ basis + 0.2 * rng.normal(size=(b - a, dim))
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def queries_from(x: np.ndarray, m: int, noise: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = x[rng.integers(0, len(x), m)] + noise * rng.normal(size=(m, x.shape[1])).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def ingest(store, name: str, x: np.ndarray, batch: int, payload=lambda i: {}) -> float:
    t0 = time.perf_counter()
    for a in range(0, len(x), batch):
        ids = [f"v{i}" for i in range(a, min(len(x), a + batch))]
        store.upsert(name, ids, x[a:a + batch], [payload(i) for i in range(a, a + len(ids))])
    return len(x) / (time.perf_counter() - t0)


def timed_search(store, name: str, q: np.ndarray, k: int = 10) -> tuple[list[list[str]], list[float]]:
    ids, lat = [], []
    for row in q:
        t = time.perf_counter()
        hits = store.search(name, row, k)[0]
        lat.append(time.perf_counter() - t)
        ids.append([h.id for h in hits])
    return ids, lat


def recall(got: list[list[str]], want: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(got, want)]))


def run_embedded(args, out: dict, label: str, x: np.ndarray, q: np.ndarray, metric: str, workdir: Path) -> dict:
    from zest.store.embedded import EmbeddedStore

    rec: dict = {"n": len(x), "dim": x.shape[1], "metric": metric}
    store = EmbeddedStore(workdir / f"{label}.sqlite3", ann_min_rows=len(x) + 1)  # exact while ingesting
    store.create_collection("c", x.shape[1], metric)
    rec["ingest_per_s"] = ingest(store, "c", x, args.batch)
    print(f"  {label}: ingested {len(x)} at {rec['ingest_per_s']:.0f}/s")
    exact_ids, lat = timed_search(store, "c", q[:args.exact_queries])
    rec["exact_ms"] = latency_ms(lat)
    t0 = time.perf_counter()
    store.ann_min_rows = min(len(x), args.ann_min_rows)
    store.background = False
    store._maybe_build_ann(store._indexes["c"])
    rec["ivf_build_s"] = time.perf_counter() - t0
    rec["ivf_lists"] = store._indexes["c"].ann.index.nlist
    print(f"  {label}: IVF ({rec['ivf_lists']} lists) built in {rec['ivf_build_s']:.1f}s")
    exact_full = exact_ids
    rec["ivf"] = {}
    for nprobe in args.nprobe:
        store.nprobe = nprobe
        timed_search(store, "c", q[:20])  # warm
        got, lat = timed_search(store, "c", q[:args.exact_queries])
        rec["ivf"][nprobe] = {"latency_ms": latency_ms(lat), "recall_at_10": recall(got, exact_full)}
    store.nprobe = args.default_nprobe
    rng = np.random.default_rng(3)
    victims = [f"v{i}" for i in rng.choice(len(x), args.deletes, replace=False)]
    lat = []
    for v in victims:
        t = time.perf_counter()
        store.delete("c", [v])
        lat.append(time.perf_counter() - t)
    rec["delete_ms"] = latency_ms(lat)
    got, _ = timed_search(store, "c", q[:50])
    rec["deleted_never_returned"] = not (set(victims) & {i for row in got for i in row})
    store.close()
    return rec


def run_milvus(args, x: np.ndarray, q: np.ndarray, workdir: Path) -> dict:
    from zest.store.milvus import MilvusStore

    store = MilvusStore(str(workdir / "m.db"), index_type="FLAT", shared=False)
    store.create_collection("c", x.shape[1], "cosine")
    rate = ingest(store, "c", x, args.batch)
    _, lat = timed_search(store, "c", q[:100])
    dl = []
    for i in range(50):
        t = time.perf_counter()
        store.delete("c", [f"v{i}"])
        dl.append(time.perf_counter() - t)
    store.close()
    return {"n": len(x), "ingest_per_s": rate, "search_ms": latency_ms(lat), "delete_ms": latency_ms(dl)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="stored vectors (default 1,000,000; quick 20,000)")
    ap.add_argument("--dim", type=int, default=256, help="CLIP collection dimension (zest-tiny: 256)")
    ap.add_argument("--rec-dim", type=int, default=65, help="recommender rows: model dim + bias column")
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=None, help="queries with an exact answer (default --queries)")
    ap.add_argument("--nprobe", default="64,128,192,256")
    ap.add_argument("--default-nprobe", type=int, default=192)
    ap.add_argument("--ann-min-rows", type=int, default=1000)
    ap.add_argument("--deletes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000, help="vectors per upsert")
    ap.add_argument("--milvus-n", type=int, default=None, help="vectors for milvus-lite (default 20,000; quick 5,000)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    args.n = args.n or (20_000 if args.quick else 1_000_000)
    args.milvus_n = args.milvus_n or (5_000 if args.quick else 20_000)
    args.exact_queries = args.exact_queries or args.queries
    args.nprobe = [int(v) for v in args.nprobe.split(",")]
    env = env_info()
    warn_if_busy(env)
    out: dict = {"benchmark": "store", "env": env, "args": vars(args), "results": {}}
    with tempfile.TemporaryDirectory(prefix="zest-bench-store-") as tmp:
        work = Path(tmp)
        x = make_vectors(args.n, args.dim, args.clusters)
        q = queries_from(x, args.queries, noise=0.03)
        out["results"]["collections"] = run_embedded(args, out, "collections", x, q, "cosine", work)
        del x
        rng = np.random.default_rng(5)
        items = make_vectors(args.n, args.rec_dim, args.clusters, seed=7)
        items[:, -1] = rng.normal(scale=0.3, size=args.n)  # content bias
        users = np.concatenate([queries_from(items[:, :-1], args.queries, noise=0.3, seed=9),
                                np.ones((args.queries, 1), np.float32)], axis=1)
        out["results"]["recommender"] = run_embedded(args, out, "rec", items, users, "ip", work)
        del items
        xm = make_vectors(args.milvus_n, args.dim, args.clusters, seed=11)
        out["results"]["milvus_lite"] = run_milvus(args, xm, queries_from(xm, 100, 0.03), work)

    rows = []
    for label in ("collections", "recommender"):
        r = out["results"][label]
        rows.append([label, "exact", r["n"], r["exact_ms"]["p50"], r["exact_ms"]["p95"], 1.0])
        for nprobe, v in r["ivf"].items():
            rows.append([label, f"ivf nprobe={nprobe}", r["n"], v["latency_ms"]["p50"], v["latency_ms"]["p95"],
                         v["recall_at_10"]])
    m = out["results"]["milvus_lite"]
    rows.append(["milvus-lite", "FLAT", m["n"], m["search_ms"]["p50"], m["search_ms"]["p95"], 1.0])
    print_table(["store", "search", "n", "p50 ms", "p95 ms", "recall@10"], rows, "Search")
    print_table(["store", "n", "ingest/s", "delete p50 ms", "delete max ms", "IVF build s"],
                [[lab, out["results"][k]["n"], out["results"][k]["ingest_per_s"],
                  out["results"][k]["delete_ms"]["p50"], out["results"][k]["delete_ms"]["max"],
                  out["results"][k].get("ivf_build_s")]
                 for lab, k in (("embedded (collections)", "collections"), ("embedded (recommender)", "recommender"),
                                ("milvus-lite", "milvus_lite"))], "Writes")
    c, r = out["results"]["collections"], out["results"]["recommender"]
    dn = args.default_nprobe
    out["targets"] = [
        check_target(f"search p50 ms at {args.n} (IVF nprobe={dn})", c["ivf"][dn]["latency_ms"]["p50"], 10, False),
        check_target(f"search recall@10 vs exact (nprobe={dn})", c["ivf"][dn]["recall_at_10"], 0.99),
        check_target(f"delete p50 ms at {args.n}", c["delete_ms"]["p50"], 10, False),
        check_target(f"recommender search p50 ms at {args.n} (in process)", r["ivf"][dn]["latency_ms"]["p50"], 20, False),
        check_target(f"recommender recall@10 vs exact (nprobe={dn})", r["ivf"][dn]["recall_at_10"], 0.99),
    ]
    print_targets(out["targets"])
    write_results("store" if args.n >= 1_000_000 else f"store-{args.n}", out, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
