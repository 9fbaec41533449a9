"""Memory of a warm zest server, process by process (no peer needed: e.g. zest-tiny, which Infinity cannot load).

Starts zest (default zest-tiny, the default runtime), warms it with image and text requests, then records the
RSS/PSS of every process of the `bentoml serve` tree by role (benchmarks/harness/memory.py): the arbiter, the
API worker, the encoder, the recommender ("warm"). Then it posts `--items` item texts in one POST /items (timed:
the first item text loads MiniLM) and asks one /recommend by ids and free text, and records them again
("items"). bench_peer.py records the same next to Infinity's for ViT-B-32.

    python3 benchmarks/bench_memory.py                       # zest-tiny; target: total RSS <= 1.5 GB
    python3 benchmarks/bench_memory.py --model ViT-B-32/random --zest-env ZEST_RUNTIME=torch
    python3 benchmarks/bench_memory.py --items 0             # CLIP requests only, no recommender step
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.cli import add_common_args, device_env, quiet_libraries  # noqa: E402
from benchmarks.harness.environment import env_info, warn_if_busy  # noqa: E402
from benchmarks.harness.inputs import jpeg_bytes, make_images  # noqa: E402
from benchmarks.harness.memory import tree_memory, zest_role  # noqa: E402
from benchmarks.harness.report import check_target, print_table, print_targets, slug, write_results  # noqa: E402
from benchmarks.harness.servers import rec_model_env, serve, served_runtime  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zest-tiny", help="model spec the server loads (ViT-B-32/random: seeded)")
    ap.add_argument("--requests", type=int, default=None, help="warm-up requests of each kind (default 20, quick 4)")
    ap.add_argument("--items", type=int, default=20,
                    help="items in the POST /items of the recommender step, then one /recommend (0: no step)")
    ap.add_argument("--target-mb", type=float, default=None,
                    help="total RSS target (default 1536 for zest-tiny, none otherwise)")
    ap.add_argument("--zest-env", action="append", default=[], metavar="KEY=VALUE", help="extra server setting")
    add_common_args(ap)
    args = ap.parse_args(argv)
    args.requests = args.requests or (4 if args.quick else 20)
    if args.target_mb is None and args.model == "zest-tiny":
        args.target_mb = 1536.0
    return args


def model_env(spec: str, work: Path) -> dict[str, str]:
    """A `*/random` spec is written once as a local checkpoint (seeded), as bench_peer does; others as given."""
    if not spec.endswith("/random"):
        return {"ZEST_MODEL": spec}
    import torch

    from zest.models.factory import load_clip
    from zest.models.loading import export_checkpoint

    torch.manual_seed(0)
    return {"ZEST_MODEL": f"local-dir:{export_checkpoint(load_clip(spec, torch.device('cpu')), work / 'ckpt')}"}


ITEM_WORDS = ("space", "whales", "Paris", "a heist", "dragons", "jazz", "a trial", "robots", "the sea", "chess")


def recommender_step(session: Any, url: str, n: int) -> float:
    """POST /items with `n` items (seconds it took: the first item text loads MiniLM), then one /recommend by
    item ids and a free-text history."""
    import time

    items = [{"id": f"b{i}", "text": f"A film about {ITEM_WORDS[i % len(ITEM_WORDS)]}, number {i}"} for i in range(n)]
    start = time.perf_counter()
    r = session.post(f"{url}/items", json={"items": items}, timeout=300)
    seconds = time.perf_counter() - start
    r.raise_for_status()
    r = session.post(f"{url}/recommend", json={"history": ["b0", "b1"], "history_texts": ["a film about the sea"],
                                               "k": 5}, timeout=300)
    r.raise_for_status()
    return seconds


def print_memory(mem: dict[str, Any], title: str) -> None:
    rows = [[p["role"], p["pid"], f"{p['rss_mb']:.0f}", f"{p['pss_mb']:.0f}" if p["pss_mb"] is not None else "-"]
            for p in sorted(mem["processes"], key=lambda p: p["role"])]
    rows.append(["total", "", f"{mem['total_rss_mb']:.0f}",
                 f"{mem['total_pss_mb']:.0f}" if mem["total_pss_mb"] is not None else "-"])
    print_table(["process", "pid", "RSS MB", "PSS MB"], rows, title=title)


def main(argv: list[str] | None = None) -> int:
    import requests

    args = parse_args(argv)
    quiet_libraries()
    env = env_info()
    warn_if_busy(env)
    record: dict[str, Any] = {"benchmark": "memory", "quick": args.quick, "env": env, "model": args.model,
                              "config": vars(args).copy()}
    payloads = [base64.b64encode(jpeg_bytes(im)).decode() for im in make_images(4, (640, 480))]
    with tempfile.TemporaryDirectory(prefix="zest-bench-memory-") as tmp:
        work = Path(tmp)
        zest_env = {**model_env(args.model, work), "ZEST_DATA_DIR": str(work / "data"),
                    **rec_model_env(work / "data", record), **device_env(args.device),
                    **dict(kv.split("=", 1) for kv in args.zest_env)}
        with serve(zest_env, "memory-zest", timeout=args.start_timeout, log_dir=args.log_dir,
                   root=args.server_root) as zest:
            record["zest_runtime"], record["ready_s"] = served_runtime(zest.url), zest.ready_s
            record["cold"] = tree_memory(zest.proc.pid, zest_role)
            with requests.Session() as session:
                for i in range(args.requests):
                    for path, body in (("/embed/image", {"images": [payloads[i % len(payloads)]]}),
                                       ("/embed/text", {"texts": [f"a photo of thing {i}"]})):
                        r = session.post(f"{zest.url}{path}", json=body, timeout=300)
                        r.raise_for_status()
                record["warm"] = tree_memory(zest.proc.pid, zest_role)
                if args.items:
                    record["first_items_s"] = recommender_step(session, zest.url, args.items)
                    record["items"] = tree_memory(zest.proc.pid, zest_role)
    record["env"]["load_avg_at_end"] = list(os.getloadavg())
    warm = record["warm"]
    print_memory(warm, f"zest {args.model}, warm after {args.requests} image + {args.requests} text requests "
                       f"(runtime {record['zest_runtime']})")
    if args.items:
        print_memory(record["items"], f"then POST /items ({args.items} items, the first: "
                                      f"{record['first_items_s']:.1f} s) and one /recommend")
    record["targets"] = ([check_target(f"zest {args.model} total RSS MB, warm", warm["total_rss_mb"], args.target_mb,
                                       higher_is_better=False)] if args.target_mb else [])
    print_targets(record["targets"])
    write_results(f"memory-{slug(args.model)}", record, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
