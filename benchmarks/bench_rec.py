"""Recommender: `/recommend` latency on catalogues of 10k, 100k and 1M items, and `/items` ingestion rate.

For each catalogue size a fresh server is started on its own data dir and measured with one client:

  recommend   POST /recommend with a history of --history random item ids (k=10, exclude_history),
              over the whole catalogue, and again restricted to --candidates candidate ids
  ingest      POST /items with --ingest-batch new items per request (each text embedded on write),
              on the first catalogue's server: items/s and per-request latency

Catalogues of 100k-1M items would take hours to ingest over HTTP (every text is embedded), so by default
they are built *directly* before the server starts (`--load direct`): a pool of --pool distinct synthetic
item texts is embedded once with the server's own item model, and item i gets text pool[i % pool] and its
vector, written through the server's own `ItemCatalog` at the path and with the model fingerprint the
server uses (service.recommender.build_recommender), so the server loads it as is and re-embeds nothing.
`--load http` ingests every catalogue through POST /items instead (small sizes only).

    python3 benchmarks/bench_rec.py                       # 10k, 100k, 1M
    python3 benchmarks/bench_rec.py --quick               # 1k, 10k
    python3 benchmarks/bench_rec.py --rec-model random    # an untrained model of the default architecture
    python3 benchmarks/bench_rec.py --data-root /tmp/rec  # keep (and reuse) the built catalogues

The server also loads a CLIP model (ZEST_MODEL) that /recommend never touches; by default it is a tiny
randomly initialised open_clip checkpoint written to a temp dir, to keep memory and start-up small.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.cli import add_common_args, device_env, quiet_libraries  # noqa: E402
from benchmarks.harness.environment import env_info, warn_if_busy  # noqa: E402
from benchmarks.harness.report import error_text, print_table, write_results  # noqa: E402
from benchmarks.harness.servers import serve, untrained_rec_model, wait_until  # noqa: E402
from benchmarks.harness.timing import Sample, latency_ms  # noqa: E402
from zest.service.settings import Settings  # noqa: E402

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
WORDS = ["night", "river", "city", "dream", "last", "summer", "storm", "silent", "golden", "broken", "house",
         "road", "star", "winter", "secret", "blue", "fire", "ghost", "island", "king", "little", "lost", "machine",
         "moon", "north", "ocean", "paper", "queen", "red", "shadow", "stone", "sun", "time", "war", "wild", "wolf"]
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


# ------------------------------------------------------------------------------------ synthetic data
def item_text(i: int, salt: str = "") -> str:
    """A MovieLens-like item description, distinct for every i (and salt)."""
    rng = random.Random(f"{salt}{i}")
    title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))).title()
    genres = ", ".join(sorted(rng.sample(GENRES, rng.randint(1, 3))))
    return f"{title} {salt}{i} ({rng.randint(1920, 2024)}). Genres: {genres}."


def item_id(i: int) -> str:
    return f"item-{i:07d}"


# ----------------------------------------------------------------------------------- model set-up
def resolve_rec_model(choice: str, workdir: Path) -> tuple[str, str]:
    """(model dir, how it was chosen) for --rec-model: 'auto' (the shipped model if it exists, else an
    untrained one), 'shipped', 'random' (untrained, default architecture) or a model directory."""
    from zest.service.recommender import shipped_model_dir

    if choice in ("auto", "shipped"):
        shipped = shipped_model_dir()
        if (shipped / "model.safetensors").is_file():
            return str(shipped), "shipped"
        if choice == "shipped":
            raise SystemExit(f"no shipped recommender model in {shipped}; pass --rec-model random or a directory")
        choice = "random"
    if choice == "random":
        return untrained_rec_model(workdir / "zesrec-random"), "random (untrained, default config)"
    return str(Path(choice).resolve()), "directory"


def resolve_clip_model(choice: str, workdir: Path) -> str:
    """ZEST_MODEL for the server: 'tiny' writes a few-MB random open_clip checkpoint; else a zest spec."""
    if choice != "tiny":
        return choice
    import torch
    from open_clip.model import CLIP

    from zest.models.loading import save_checkpoint

    torch.manual_seed(0)
    return "local-dir:" + str(save_checkpoint(CLIP(**TINY_CLIP_CFG), TINY_CLIP_CFG, workdir / "tiny-clip"))


# ---------------------------------------------------------------------------------- catalogue loading
def open_server_catalogue(data_dir: Path, model_dir: str):
    """(ItemCatalog, item model) exactly as the server opens them (same file, same fingerprint).

    If service.recommender changes how it builds the catalogue, this is the one place to adapt."""
    from zest.service.recommender import build_recommender

    settings = SimpleNamespace(data_dir=str(data_dir), max_rec_items=1000, max_item_text_chars=5000,
                               max_history=1000, max_k=1000, max_candidates=100_000)
    try:
        rec = build_recommender(model_dir, "bench", settings)
    except AttributeError:  # RecLimits.of may want more settings fields: fall back to the real Settings
        rec = build_recommender(model_dir, "bench", Settings(data_dir=str(data_dir)))
    return rec.catalog, rec.model


_POOL_CACHE: dict[tuple[str, int], dict] = {}


def pool_vectors(model, model_dir: str, texts: list[str]) -> dict:
    """text -> item vector for the pool texts, computed once per (model, pool size) in this process."""
    import numpy as np

    key = (model_dir, len(texts))
    if key not in _POOL_CACHE:
        _POOL_CACHE[key] = dict(zip(texts, np.asarray(model.embed_items(texts), np.float32)))
    return _POOL_CACHE[key]


def build_direct(data_dir: Path, n: int, model_dir: str, pool: int, chunk: int = 10_000,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write an n-item catalogue into `data_dir` before the server starts (see the module docstring)."""
    import numpy as np

    catalog, model = open_server_catalogue(data_dir, model_dir)
    try:
        have = len(catalog)
        if have == n:
            log(f"  reusing the {n}-item catalogue in {data_dir}")
            return {"reused": True, "seconds": 0.0}
        if have:
            raise SystemExit(f"{data_dir} already holds {have} items, not {n}: remove it or use another --data-root")
        t0 = time.perf_counter()
        texts = [item_text(i) for i in range(min(pool, n))]
        lookup = pool_vectors(model, model_dir, texts)
        embed_s = time.perf_counter() - t0
        catalog.embed = lambda batch: np.stack([lookup[t] for t in batch])  # the vectors the model gave
        for a in range(0, n, chunk):
            catalog.upsert([(item_id(i), texts[i % len(texts)]) for i in range(a, min(n, a + chunk))])
            if (a // chunk) % 20 == 19:
                log(f"  ... {a + chunk} items written")
        seconds = time.perf_counter() - t0
        log(f"  built {n} items directly in {seconds:.1f}s ({len(texts)} distinct texts embedded in {embed_s:.1f}s)")
        return {"reused": False, "seconds": seconds, "distinct_texts": len(texts), "embed_s": embed_s}
    finally:
        catalog.close()


# --------------------------------------------------------------------------------------- HTTP client
class RecClient:
    """The recommender endpoints as planned (service/app.py); adapt here if the API shifts."""

    def __init__(self, url: str, timeout: float = 600):
        import requests

        self.url, self.timeout = url, timeout
        self.session = requests.Session()

    def _ok(self, r) -> dict:
        if r.status_code != 200:
            raise RuntimeError(f"{r.request.method} {r.request.path_url} -> {r.status_code}: {r.text[:300]}")
        return r.json()

    def upsert(self, items: list[tuple[str, str]]) -> dict:
        body = {"items": [{"id": i, "text": t} for i, t in items]}
        return self._ok(self.session.post(f"{self.url}/items", json=body, timeout=self.timeout))

    def get(self, item: str) -> dict:
        return self._ok(self.session.get(f"{self.url}/items/{item}", timeout=self.timeout))

    def recommend(self, history: list[str], k: int = 10, candidates: list[str] | None = None) -> dict:
        body = {"history": history, "k": k, "exclude_history": True, "candidates": candidates}
        return self._ok(self.session.post(f"{self.url}/recommend", json=body, timeout=self.timeout))


def ingest_http(client: RecClient, start: int, n: int, batch: int, salt: str = "") -> Sample:
    """POST n new items (ids start..start+n) in requests of `batch`; items/s and per-request latency."""
    lat = []
    t0 = time.perf_counter()
    for a in range(start, start + n, batch):
        items = [(item_id(i), item_text(i, salt)) for i in range(a, min(start + n, a + batch))]
        t = time.perf_counter()
        client.upsert(items)
        lat.append(time.perf_counter() - t)
    return Sample(time.perf_counter() - t0, n, lat)


# ------------------------------------------------------------------------------------------ scenarios
@dataclass
class Scenario:
    name: str
    body: Callable[[random.Random, int], dict]  # (rng, catalogue size) -> recommend kwargs


def scenarios(history: int, k: int, candidates: int) -> list[Scenario]:
    def ids(rng: random.Random, n: int, m: int) -> list[str]:
        return [item_id(i) for i in rng.sample(range(n), min(m, n))]

    out = [Scenario(f"history{history}", lambda rng, n: {"history": ids(rng, n, history), "k": k})]
    if candidates:
        out.append(Scenario(f"history{history}+cand{candidates}",
                            lambda rng, n: {"history": ids(rng, n, history), "k": k,
                                            "candidates": ids(rng, n, candidates)}))
    return out


def measure_recommend(client: RecClient, n_items: int, scen: list[Scenario], requests: int, repeats: int,
                      seed: int = 0) -> dict[str, Any]:
    """Interleaved: each round sends `requests` requests of every scenario; latency pooled over rounds."""
    rng = random.Random(seed)
    lat: dict[str, list[float]] = {s.name: [] for s in scen}
    for s in scen:  # warm-up
        client.recommend(**s.body(rng, n_items))
    for r in range(repeats):
        for s in scen[r % len(scen):] + scen[:r % len(scen)]:
            for _ in range(requests):
                body = s.body(rng, n_items)
                t = time.perf_counter()
                out = client.recommend(**body)
                lat[s.name].append(time.perf_counter() - t)
                if not 0 < len(out["items"]) <= body["k"]:
                    raise RuntimeError(f"/recommend returned {len(out['items'])} items for k={body['k']}")
    return {name: latency_ms(v) for name, v in lat.items()}


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=None, help="catalogue sizes (default 10000,100000,1000000; quick 1000,10000)")
    ap.add_argument("--load", choices=("direct", "http"), default="direct", help="how catalogues are filled")
    ap.add_argument("--pool", type=int, default=None, help="distinct texts embedded for direct loading "
                                                           "(default 5000, quick 1000)")
    ap.add_argument("--rec-model", default="auto", help="auto | shipped | random | a ZESRec model directory")
    ap.add_argument("--clip-model", default="tiny", help="ZEST_MODEL for the server ('tiny': a small random one)")
    ap.add_argument("--history", type=int, default=10, help="history length (item ids) per request")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=1000, help="candidate ids in the second scenario (0: skip)")
    ap.add_argument("--requests", type=int, default=None, help="requests per scenario per round (default 50, quick 10)")
    ap.add_argument("--ingest", type=int, default=None,
                    help="items posted in the ingestion test (default 5000, quick 1000)")
    ap.add_argument("--ingest-batch", type=int, default=None,
                    help="items per POST /items (default 1000, the server's limit; quick 250)")
    ap.add_argument("--data-root", type=Path, default=None, help="keep catalogues here and reuse them (default: temp)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    args.sizes = [int(x) for x in (args.sizes or ("1000,10000" if args.quick else "10000,100000,1000000")).split(",")]
    args.pool = args.pool or (1000 if args.quick else 5000)
    args.requests = args.requests or (10 if args.quick else 50)
    args.ingest = args.ingest if args.ingest is not None else (1000 if args.quick else 5000)
    args.ingest_batch = args.ingest_batch or (250 if args.quick else 1000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    return args


def run_size(args, n: int, data_dir: Path, model_dir: str, clip_spec: str, do_ingest: bool) -> dict[str, Any]:
    """Build (or reuse) one catalogue, start a server on it, measure; the size's record."""
    out: dict[str, Any] = {"items": n, "load": args.load, "data_dir": str(data_dir)}
    if args.load == "direct":
        out["build"] = build_direct(data_dir, n, model_dir, args.pool)
    env = {"ZEST_MODEL": clip_spec, "ZEST_REC_MODEL": model_dir, "ZEST_DATA_DIR": str(data_dir),
           **device_env(args.device)}
    with serve(env, f"rec-{n}", timeout=args.start_timeout, log_dir=args.log_dir, root=args.server_root) as server:
        client = RecClient(server.url)
        out["ready_s"] = server.ready_s
        if args.load == "http":
            s = ingest_http(client, 0, n, args.ingest_batch)
            out["build"] = {"seconds": s.seconds, "items_per_s": s.rate}
        # /readyz covers the CLIP encoder only: wait until the recommender answers with its catalogue
        out["recommender_ready_s"] = server.ready_s + wait_until(lambda: client.get(item_id(n - 1)) is not None,
                                                                 args.start_timeout, what="recommender ready")
        print(f"  server ready after {out['recommender_ready_s']:.1f}s with {n} items")
        if n >= Settings.from_env().ann_min_rows:  # the IVF index builds in the background; exact scan serves meanwhile
            out["ann_ready_s"] = wait_until(lambda: "IVF index for" in server.log(chars=1_000_000),
                                            args.start_timeout, interval=2.0, what="IVF index built")
            print(f"  IVF index ready {out['ann_ready_s']:.1f}s later")
        out["recommend"] = measure_recommend(client, n, scenarios(args.history, args.k, args.candidates),
                                             args.requests, args.repeats)
        if do_ingest and args.ingest:
            client.upsert([("warm-up", item_text(0, salt="warm-up "))])  # loads the text encoder: not timed
            s = ingest_http(client, n, args.ingest, args.ingest_batch, salt="new ")
            out["ingest"] = {"items": args.ingest, "batch": args.ingest_batch, "seconds": s.seconds,
                             "items_per_s": s.rate, "request_latency_ms": latency_ms(s.latencies)}
            print(f"  ingested {args.ingest} items over HTTP: {s.rate:.1f} items/s")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    env = env_info()
    warn_if_busy(env)
    workdir = Path(tempfile.mkdtemp(prefix="zest-bench-rec-"))
    data_root = args.data_root or workdir / "data"
    record: dict[str, Any] = {"benchmark": "rec", "quick": args.quick, "env": env, "config": vars(args),
                              "sizes": [], "errors": {}, "notes": []}
    try:
        model_dir, how = resolve_rec_model(args.rec_model, workdir)
        clip_spec = resolve_clip_model(args.clip_model, workdir)
        record.update(rec_model={"dir": model_dir, "chosen": how}, clip_model=clip_spec)
        print(f"bench_rec: sizes {args.sizes}, item model {how} ({model_dir}), load {args.load}")
        for idx, n in enumerate(args.sizes):
            print(f"catalogue of {n} items")
            try:
                record["sizes"].append(run_size(args, n, data_root / f"n{n}", model_dir, clip_spec, do_ingest=idx == 0))
            except Exception as exc:
                record["errors"][str(n)] = error_text(exc)
                print(f"  FAILED: {error_text(exc, 2000)}")
    finally:
        if args.data_root is None:
            shutil.rmtree(workdir, ignore_errors=True)
    record["env"]["load_avg_at_end"] = list(os.getloadavg())
    report(record)
    write_results("rec", record, args.quick)
    return 1 if record["errors"] else 0


def report(record: dict) -> None:
    rows = []
    for size in record["sizes"]:
        for scen, lat in size["recommend"].items():
            rows.append([size["items"], scen, lat.get("p50"), lat.get("p95"), lat.get("p99"), lat.get("n"),
                         size["recommender_ready_s"]])
    print_table(["items", "request", "p50 ms", "p95 ms", "p99 ms", "n", "start s"], rows,
                title="POST /recommend, 1 client (latency from the client, JSON included)")
    ingest = [s["ingest"] for s in record["sizes"] if "ingest" in s]
    if ingest:
        g = ingest[0]
        print_table(["items", "per request", "items/s", "request p50 ms", "request p95 ms"],
                    [[g["items"], g["batch"], g["items_per_s"], g["request_latency_ms"].get("p50"),
                      g["request_latency_ms"].get("p95")]],
                    title="POST /items ingestion (each text embedded on write)")
    record["notes"] += [
        f"item model: {record.get('rec_model', {}).get('chosen')}; scoring cost depends on its vector width, "
        "not on its training.",
        "direct-loaded catalogues reuse --pool distinct texts (and their exact vectors) cyclically.",
    ]
    if record["errors"]:
        print(f"\nerrors: {record['errors']}")


if __name__ == "__main__":
    raise SystemExit(main())
