"""zest against Infinity, the embedding server a zest user would otherwise pick: same weights, same client,
interleaved rounds, on this machine.

Both servers hold the very same CLIP (default ViT-B-32 with seeded random weights: no hub here): zest loads
it as a local open_clip checkpoint, Infinity as the Hugging Face copy that benchmarks/hf_convert.py makes
from it. One client process drives both, alternating server by server within every round:

  image@N      N concurrent clients, one 640x480 JPEG per request (JSON base64 to both servers)
  text1@N      N concurrent clients, one sentence per request
  text32@1     one client, 32 sentences per request
  burst        one client's p50 on a fresh server, then a 32-client burst, then the same client again

Sentences are at most 20 tokens: Infinity 0.0.78 reads `config.max_length` (20 by default) as its text
limit, so longer ones would be cut by one server and not the other. CPU seconds used by the client and by
each server's process tree are recorded per load. After the load rounds (warm) the memory of every process
of both servers is recorded, labelled by role (zest: the `bentoml serve` arbiter, the API worker, the encoder,
the recommender; benchmarks/harness/memory.py), with zest's runtime as its encoder reports it (`/metrics`).

Infinity runs in its own virtualenv, installed in one command so that pip keeps the served torch:

    python3 -m venv ~/.infinity-venv && ~/.infinity-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 \\
        "infinity-emb[server,torch,vision]==0.0.78" aiohttp

    python3 benchmarks/bench_peer.py --infinity ~/.infinity-venv/bin/infinity_emb
    python3 benchmarks/bench_peer.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.cli import add_common_args, device_env, quiet_libraries  # noqa: E402
from benchmarks.harness.environment import env_info, set_threads, warn_if_busy  # noqa: E402
from benchmarks.harness.inputs import jpeg_bytes, make_images  # noqa: E402
from benchmarks.harness.load import run_clients  # noqa: E402
from benchmarks.harness.memory import tree_memory, zest_role  # noqa: E402
from benchmarks.harness.report import check_target, print_table, print_targets, slug, write_results  # noqa: E402
from benchmarks.harness.servers import rec_model_env, serve, served_runtime  # noqa: E402
from benchmarks.harness.timing import Sample, latency_ms, median  # noqa: E402
from tests.server import free_port  # noqa: E402

SENTENCES = [  # <= 20 CLIP tokens each (checked at start-up)
    "a photo of a cat sleeping on a sofa", "two dogs playing in the park", "a red car parked on the street",
    "a bowl of fresh fruit on a table", "a mountain lake at sunrise", "a person riding a bicycle in the rain",
    "an old wooden boat on the beach", "a city skyline at night", "a plate of spaghetti with tomato sauce",
    "a child flying a kite", "a snowy forest path", "a cup of coffee next to a laptop",
    "a yellow taxi in heavy traffic", "a bird sitting on a branch", "a lighthouse on a rocky coast",
    "a group of friends having dinner",
]


class Peer:
    """One server under test: how to send each kind of request to it, and its process tree for CPU time."""

    def __init__(self, name: str, url: str, pid: int, image: Callable, texts: Callable,
                 role: Callable[[list[str], bool], str] | None = None):
        self.name, self.url, self.pid, self.image, self.texts = name, url, pid, image, texts
        self.role = role or (lambda cmdline, is_root: name if is_root else f"{name}:child")

    def memory(self) -> dict[str, Any]:
        """RSS/PSS of every process of this server, by role."""
        return tree_memory(self.pid, self.role)

    def cpu_seconds(self) -> float:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return float("nan")
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total


def zest_peer(url: str, pid: int, timeout: float) -> Peer:
    def image(session, b64: str) -> None:
        r = session.post(f"{url}/embed/image", json={"images": [b64]}, timeout=timeout)
        if r.status_code != 200 or len(r.json()["embeddings"]) != 1:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

    def texts(session, sentences: list[str]) -> None:
        r = session.post(f"{url}/embed/text", json={"texts": sentences}, timeout=timeout)
        if r.status_code != 200 or len(r.json()["embeddings"]) != len(sentences):
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

    return Peer("zest", url, pid, image, texts, role=zest_role)


def infinity_peer(url: str, pid: int, model: str, timeout: float) -> Peer:
    def image(session, b64: str) -> None:
        r = session.post(f"{url}/embeddings", timeout=timeout, json={
            "model": model, "modality": "image", "input": [f"data:image/jpeg;base64,{b64}"]})
        if r.status_code != 200 or len(r.json()["data"]) != 1:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

    def texts(session, sentences: list[str]) -> None:
        r = session.post(f"{url}/embeddings", json={"model": model, "input": sentences}, timeout=timeout)
        if r.status_code != 200 or len(r.json()["data"]) != len(sentences):
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

    return Peer("infinity", url, pid, image, texts)


# ------------------------------------------------------------------------------------------- servers
def prepare_weights(spec: str, workdir: Path) -> tuple[Path, Path, dict]:
    """The same weights twice: an open_clip checkpoint for zest and a transformers copy for Infinity."""
    import torch

    from benchmarks.hf_convert import save_hf_clip
    from zest.models.factory import load_clip
    from zest.models.loading import export_checkpoint

    torch.manual_seed(0)
    loaded = load_clip(spec, torch.device("cpu"))
    zest_dir = export_checkpoint(loaded, workdir / "open_clip")
    hf_dir = workdir / "hf"
    save_hf_clip(loaded.model, loaded.preprocess_cfg, hf_dir)
    from transformers import CLIPImageProcessor

    # transformers 4 (Infinity's) reads the image processor from preprocessor_config.json, and chokes on the
    # nested processor_config.json that transformers 5 writes
    CLIPImageProcessor.from_pretrained(hf_dir).save_pretrained(hf_dir)
    (hf_dir / "processor_config.json").unlink(missing_ok=True)
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(hf_dir)
    longest = max(len(tokenizer(s)["input_ids"]) for s in SENTENCES)
    assert longest <= 20, f"a benchmark sentence has {longest} tokens; Infinity cuts at 20"
    return zest_dir, hf_dir, {"spec": spec, "max_sentence_tokens": longest}


@contextlib.contextmanager
def infinity_server(executable: str, hf_dir: Path, log_path: Path, timeout: float,
                    device: str = "cpu") -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([executable, "v2", "--model-id", str(hf_dir), "--engine", "torch", "--device", device,
                                 "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        deadline = time.perf_counter() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"infinity exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"infinity not ready after {timeout:.0f}s (log: {log_path})")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------------------------- loads
def measure(peer: Peer, kind: str, clients: int, n_requests: int, payloads: list[str]) -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    if kind == "image":
        def request(session, i):
            peer.image(session, payloads[i % len(payloads)])
        items_per_request = 1
    else:
        per = 1 if kind == "text1" else 32

        def request(session, i):
            peer.texts(session, [SENTENCES[(i * per + j) % len(SENTENCES)] for j in range(per)])
        items_per_request = per
    server_cpu0, client_cpu0 = peer.cpu_seconds(), sum(me.cpu_times()[:2])
    sample: Sample = run_clients(clients, n_requests, request)
    server_cpu, client_cpu = peer.cpu_seconds() - server_cpu0, sum(me.cpu_times()[:2]) - client_cpu0
    return {"items_per_s": sample.count * items_per_request / sample.seconds, "requests": sample.count,
            "errors": sample.errors, "error_messages": sample.error_messages, "latency_ms": latency_ms(sample.latencies),
            "server_cpu_s_per_item": server_cpu / max(1, sample.count * items_per_request),
            "client_cpu_s": client_cpu, "wall_s": sample.seconds}


def burst(peer: Peer, payloads: list[str], lone: int, burst_requests: int) -> dict[str, Any]:
    """One client's p50 before and after a 32-client burst, on a server that has seen no load yet."""
    before = measure(peer, "image", 1, lone, payloads)
    during = measure(peer, "image", 32, burst_requests, payloads)
    after = measure(peer, "image", 1, lone, payloads)
    return {"fresh_p50_ms": before["latency_ms"]["p50"], "after_burst_p50_ms": after["latency_ms"]["p50"],
            "burst_items_per_s": during["items_per_s"], "errors": before["errors"] + during["errors"] + after["errors"]}


def loads(args) -> list[tuple[str, str, int, int]]:
    """(key, kind, clients, requests per round)."""
    n = args.requests
    out = [(f"image@{c}", "image", c, max(n, 2 * c)) for c in args.image_clients]
    out += [(f"text1@{c}", "text1", c, max(n, 2 * c)) for c in args.text_clients]
    out.append(("text32@1", "text32", 1, max(4, n // 4)))
    return out


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-32/random", help="open_clip spec both servers load (default ViT-B-32/random)")
    ap.add_argument("--infinity", default=os.environ.get("INFINITY_EMB") or shutil.which("infinity_emb")
                    or str(Path.home() / ".infinity-venv/bin/infinity_emb"), help="the infinity_emb executable")
    ap.add_argument("--requests", type=int, default=None, help="requests per load per round (default 64, quick 16)")
    ap.add_argument("--image-clients", default="1,8,32")
    ap.add_argument("--text-clients", default="1,8")
    ap.add_argument("--zest-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server setting for zest (repeatable), e.g. ZEST_RUNTIME=int8")
    ap.add_argument("--request-timeout", type=float, default=300)
    add_common_args(ap)
    args = ap.parse_args(argv)
    args.rounds = args.repeats or (1 if args.quick else 3)  # interleaved rounds
    args.requests = args.requests or (16 if args.quick else 64)
    args.image_clients = [int(c) for c in args.image_clients.split(",") if c]
    args.text_clients = [int(c) for c in args.text_clients.split(",") if c]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    set_threads(args.threads)
    if not Path(args.infinity).exists():
        print(f"no infinity_emb at {args.infinity}: install it as the module docstring says, or pass --infinity")
        return 2
    env = env_info()
    warn_if_busy(env)
    record: dict[str, Any] = {"benchmark": "peer", "quick": args.quick, "env": env, "model": args.model,
                              "config": vars(args).copy(), "rounds": []}
    images = make_images(max(8, args.requests // 4), (640, 480))
    payloads = [base64.b64encode(jpeg_bytes(im)).decode() for im in images]
    with tempfile.TemporaryDirectory(prefix="zest-bench-peer-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        zest_dir, hf_dir, record["weights"] = prepare_weights(args.model, work)
        log_dir = Path(args.log_dir or work)
        zest_env = {"ZEST_MODEL": f"local-dir:{zest_dir}", "ZEST_DATA_DIR": str(work / "data"),
                    **rec_model_env(work / "data", record), **device_env(args.device),
                    **dict(kv.split("=", 1) for kv in args.zest_env)}
        zest = stack.enter_context(serve(zest_env, "peer-zest", timeout=args.start_timeout, log_dir=log_dir,
                                         root=args.server_root))
        inf_url, inf_pid = stack.enter_context(infinity_server(args.infinity, hf_dir, log_dir / "peer-infinity.log",
                                                               args.start_timeout, args.device))
        peers = [zest_peer(zest.url, zest.proc.pid, args.request_timeout),
                 infinity_peer(inf_url, inf_pid, str(hf_dir), args.request_timeout)]
        record["zest_runtime"] = served_runtime(zest.url)
        print(f"bench_peer: {args.model}; zest {zest.url} (runtime {record['zest_runtime']}), infinity {inf_url}; "
              f"{args.rounds} rounds")
        # fresh servers first: the lone client before and after a burst
        record["burst"] = {p.name: burst(p, payloads, lone=max(8, args.requests // 4), burst_requests=4 * 32)
                           for p in peers}
        for r in range(args.rounds):
            row = {}
            for key, kind, clients, n in loads(args):
                order = peers if r % 2 == 0 else peers[::-1]  # alternate who goes first
                row[key] = {p.name: measure(p, kind, clients, n, payloads) for p in order}
                print(f"round {r + 1} {key}: " + ", ".join(f"{name} {m['items_per_s']:.1f}/s"
                                                           for name, m in row[key].items()))
            record["rounds"].append(row)
        record["memory"] = {p.name: p.memory() for p in peers}  # warm: after every load round
    record["env"]["load_avg_at_end"] = list(os.getloadavg())
    report(record, args)
    runtime = dict(kv.split("=", 1) for kv in args.zest_env).get("ZEST_RUNTIME", "auto")
    write_results(f"peer-{slug(args.model)}" + (f"-{runtime}" if runtime != "auto" else ""), record, args.quick)
    return 0


def report(record: dict, args) -> None:
    rows, targets, summary = [], [], {}
    for key, kind, clients, _ in loads(args):
        z = median([r[key]["zest"]["items_per_s"] for r in record["rounds"]])
        i = median([r[key]["infinity"]["items_per_s"] for r in record["rounds"]])
        zc = median([r[key]["zest"]["server_cpu_s_per_item"] for r in record["rounds"]])
        ic = median([r[key]["infinity"]["server_cpu_s_per_item"] for r in record["rounds"]])
        errors = sum(r[key][p]["errors"] for r in record["rounds"] for p in ("zest", "infinity"))
        ratio = z / i if i else None
        summary[key] = {"zest_items_per_s": z, "infinity_items_per_s": i, "ratio": ratio, "errors": errors}
        rows.append([key, f"{z:.1f}", f"{i:.1f}", f"{ratio:.2f}" if ratio else "-", f"{1000 * zc:.0f}",
                     f"{1000 * ic:.0f}", errors])
        targets.append(check_target(f"{key}: zest / infinity", ratio, 1.5 if key == "image@8" else 1.0))
    print_table(["load", "zest /s", "infinity /s", "zest/inf", "zest CPU ms/item", "inf CPU ms/item", "errors"],
                rows, title="zest vs Infinity, same weights, medians over rounds")
    b = record["burst"]
    for name in ("zest", "infinity"):
        print(f"{name}: lone client p50 fresh {b[name]['fresh_p50_ms']:.0f} ms, after a 32-client burst "
              f"{b[name]['after_burst_p50_ms']:.0f} ms")
    z = b["zest"]
    targets.append(check_target("zest lone-client p50 after burst / fresh",
                                z["after_burst_p50_ms"] / z["fresh_p50_ms"], 1.2, higher_is_better=False))
    memory = record["memory"]
    print_table(["server", "process", "pid", "RSS MB", "PSS MB"],
                [[name, p["role"], p["pid"], f"{p['rss_mb']:.0f}",
                  f"{p['pss_mb']:.0f}" if p["pss_mb"] is not None else "-"]
                 for name, m in memory.items() for p in m["processes"]]
                + [[name, "total", "", f"{m['total_rss_mb']:.0f}",
                    f"{m['total_pss_mb']:.0f}" if m["total_pss_mb"] is not None else "-"]
                   for name, m in memory.items()],
                title="memory, warm (after the load rounds)")
    zr, ir = memory["zest"]["total_rss_mb"], memory["infinity"]["total_rss_mb"]
    targets.append(check_target("zest / infinity total RSS, warm", zr / ir if zr and ir else None, 1.3,
                                higher_is_better=False))
    print(f"zest runtime: {record.get('zest_runtime')}")
    record["summary"], record["targets"] = summary, targets
    print_targets(targets)


if __name__ == "__main__":
    sys.exit(main())
