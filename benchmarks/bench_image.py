"""Image encoding: zest side by side with the raw model and with Hugging Face transformers.

Contenders (same architecture, same weights, same machine, same run, interleaved round-robin):

  (a) limit     open_clip `model.encode_image` on pre-made tensors, in-process, inference_mode,
                at each of a few batch sizes; the best one is "the limit"
  (b) zest      `ClipEncoder.encode_images` from PIL images (preprocessing included), in-process
  (c) http@N    `bentoml serve zest.service.app:Zest`, N concurrent clients, each posting one JPEG per
                `/embed/image` request (multipart): decoding, preprocessing, batching, JSON included
  (d) hf-raw    `transformers.CLIPModel.get_image_features` with `CLIPProcessor` preprocessing from PIL
      hf-pipe   `pipeline("zero-shot-image-classification")` end to end with a few candidate labels
                (it also runs the text tower on every label for every call)

The HF model is converted from the very model (a) and (b) use (benchmarks/hf_convert.py) and its
parity is checked and recorded. Run:

    python3 benchmarks/bench_image.py                    # ViT-B-32/random, full run
    python3 benchmarks/bench_image.py --model zest-tiny  # the embedded model (no HF equivalent)
    python3 benchmarks/bench_image.py --quick            # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.cli import add_common_args, begin, device_env  # noqa: E402
from benchmarks.harness.inputs import jpeg_bytes, make_images  # noqa: E402
from benchmarks.harness.load import run_clients  # noqa: E402
from benchmarks.harness.report import check_target, error_text, print_table, print_targets, slug, write_results  # noqa: E402
from benchmarks.harness.servers import rec_model_env, serve  # noqa: E402
from benchmarks.harness.timing import Sample, interleave, repeat_for, summarize  # noqa: E402

PIPELINE_LABELS = ["a photo of a cat", "a photo of a dog", "a car", "a landscape", "a diagram"]


@dataclass
class Contender:
    key: str  # short name used in tables and JSON
    group: str  # a | b | c | d
    description: str
    run: Callable[[], Sample]
    params: dict[str, Any]


# ------------------------------------------------------------------------------------ contenders
def limit_contender(encoder, pixels, batch_size: int) -> Contender:
    """(a): the bare image tower on already-preprocessed tensors (on CUDA: under the encoder's autocast,
    the features copied back, so that the time includes the work)."""
    import torch

    model, device = encoder.model, encoder.device

    def run() -> Sample:
        lat = []
        t0 = time.perf_counter()
        with torch.inference_mode(), encoder._autocast():
            for chunk in pixels.split(batch_size):
                t = time.perf_counter()
                out = model.encode_image(chunk.to(device))
                if device.type == "cuda":
                    out.float().cpu()
                lat.append(time.perf_counter() - t)
        return Sample(time.perf_counter() - t0, len(pixels), lat)

    return Contender(f"a:limit@bs{batch_size}", "a", f"open_clip encode_image, tensors, batch {batch_size}",
                     run, {"batch_size": batch_size})


def zest_inprocess_contender(encoder, images) -> Contender:
    """(b): zest's own encoder object, PIL in, normalised features out."""

    def run() -> Sample:
        t0 = time.perf_counter()
        encoder.encode_images(images)
        return Sample(time.perf_counter() - t0, len(images))

    return Contender("b:zest-inproc", "b", f"ClipEncoder.encode_images, PIL, batch {encoder.batch_size}",
                     run, {"batch_size": encoder.batch_size})


def zest_http_contender(url: str, payloads: list[bytes], clients: int, n_requests: int,
                        timeout: float) -> Contender:
    """(c): one JPEG per POST /embed/image, `clients` requests in flight."""

    def request(session, i: int) -> None:
        files = {"images": (f"img{i}.jpg", payloads[i % len(payloads)], "image/jpeg")}
        r = session.post(f"{url}/embed/image", files=files, timeout=timeout)
        if r.status_code != 200 or len(r.json()["embeddings"]) != 1:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

    def run() -> Sample:
        return run_clients(clients, n_requests, request)

    return Contender(f"c:http@{clients}", "c", f"HTTP /embed/image, {clients} concurrent clients, 1 image/request",
                     run, {"clients": clients, "requests_per_repeat": n_requests})


def hf_raw_contender(hf_model, processor, images, batch_size: int) -> Contender:
    """(d) raw: CLIPProcessor from PIL + CLIPModel.get_image_features."""
    import torch

    def run() -> Sample:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                inputs = processor(images=images[i:i + batch_size], return_tensors="pt")
                hf_model.get_image_features(pixel_values=inputs["pixel_values"])
        return Sample(time.perf_counter() - t0, len(images))

    return Contender("d:hf-raw", "d", f"HF CLIPProcessor + CLIPModel.get_image_features, PIL, batch {batch_size}",
                     run, {"batch_size": batch_size})


def hf_pipeline_contender(classifier, images, labels: list[str], batch_size: int | None) -> Contender:
    """(d) pipeline: zero-shot classification end to end (labels are re-encoded on every call)."""
    kwargs = {"batch_size": batch_size} if batch_size else {}

    def run() -> Sample:
        t0 = time.perf_counter()
        out = classifier(images, candidate_labels=labels, **kwargs)
        assert len(out) == len(images)
        return Sample(time.perf_counter() - t0, len(images))

    return Contender("d:hf-pipeline", "d",
                     f"HF pipeline('zero-shot-image-classification'), {len(labels)} labels, "
                     f"batch_size {batch_size or 'default (1)'}",
                     run, {"labels": labels, "batch_size": batch_size, "text_tower_per_call": True})


# ------------------------------------------------------------------------------------ HF set-up
def setup_hf(model, preprocess, preprocess_cfg, workdir: Path) -> tuple[dict, Any, Any, Any]:
    """Convert, save, reload the way a user would; (parity record, CLIPModel, CLIPProcessor, pipeline)."""
    from transformers import CLIPModel, CLIPProcessor, pipeline

    from benchmarks.hf_convert import check_parity, save_hf_clip

    t0 = time.perf_counter()
    save_hf_clip(model, preprocess_cfg, workdir)
    hf_model = CLIPModel.from_pretrained(workdir).eval()
    processor = CLIPProcessor.from_pretrained(workdir)
    parity = check_parity(model, hf_model, processor.tokenizer, processor.image_processor, preprocess)
    classifier = pipeline("zero-shot-image-classification", model=str(workdir), device="cpu")
    record = {**parity.as_dict(), "convert_and_load_s": time.perf_counter() - t0,
              "image_processor": type(processor.image_processor).__name__,
              "tokenizer": type(processor.tokenizer).__name__}
    print(f"HF parity: image max abs diff {parity.image_max_abs_diff:.2e}, text {parity.text_max_abs_diff:.2e}, "
          f"token ids equal {parity.token_ids_equal} -> {'OK' if parity.ok else 'FAILED'}")
    return record, hf_model, processor, classifier


# ----------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-32/random", help="zest model spec (default ViT-B-32/random)")
    ap.add_argument("--images", type=int, default=None, help="images per contender per round (default 64, quick 16)")
    ap.add_argument("--batch-sizes", default=None, help="(a) sweep, comma-separated (default 1,8,16,32,64; quick 8,16)")
    ap.add_argument("--clients", default="1,8,32", help="(c) concurrent clients, comma-separated")
    ap.add_argument("--image-size", default="640x480", help="synthetic input images, WxH")
    ap.add_argument("--zest-batch-size", type=int, default=32, help="(b) ClipEncoder batch size (ZEST_BATCH_SIZE default)")
    ap.add_argument("--hf-batch-size", type=int, default=32, help="(d) raw batch size")
    ap.add_argument("--pipeline-batch-size", type=int, default=None, help="(d) pipeline batch_size (default: its own, 1)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds one measurement lasts at least (the image set is re-run; default 3, quick 1)")
    ap.add_argument("--request-timeout", type=float, default=300)
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    add_common_args(ap)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.images = args.images or (16 if args.quick else 64)
    args.min_time = args.min_time if args.min_time is not None else (1.0 if args.quick else 3.0)
    args.batch_sizes = [int(x) for x in (args.batch_sizes or ("8,16" if args.quick else "1,8,16,32,64")).split(",")]
    args.clients = [int(x) for x in args.clients.split(",") if x]
    w, h = (int(x) for x in args.image_size.lower().split("x"))
    args.image_wh = (w, h)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = begin(args)
    import torch

    from zest.models.clip_encoder import ClipEncoder
    from zest.models.errors import ModelLoadError
    from zest.models.factory import load_clip
    from zest.models.spec import parse_spec

    print(f"bench_image: {args.model} on {env['cpu_model']} ({env['cpu_affinity']} cores, "
          f"{env['torch_threads']} torch threads), {args.repeats} rounds x {args.images} images")
    record: dict[str, Any] = {"benchmark": "image", "quick": args.quick, "env": env, "model": args.model,
                              "config": {k: v for k, v in vars(args).items() if k not in ("image_wh",)},
                              "errors": {}, "notes": []}

    device = torch.device(args.device)
    try:
        loaded = load_clip(parse_spec(args.model), device)
    except ModelLoadError as exc:
        print(f"cannot load {args.model}: {exc}")
        return 2
    # fp32 on CPU; on CUDA the server's default (autocast), so (a) below runs under the same autocast
    encoder = ClipEncoder(loaded, device, precision="fp32" if args.device == "cpu" else "auto",
                          batch_size=args.zest_batch_size)
    model = encoder.model  # one model object for (a) and (b); (d) is converted from it
    images = make_images(args.images, args.image_wh)
    pixels = encoder.preprocess(images)
    payloads = [jpeg_bytes(im) for im in images]
    record["config"]["jpeg_bytes_mean"] = sum(map(len, payloads)) / len(payloads)

    contenders: list[Contender] = [limit_contender(encoder, pixels, bs) for bs in args.batch_sizes]
    if args.device == "cuda" and not args.skip_hf:
        args.skip_hf = True  # (d) runs transformers on CPU only here
        record["notes"].append("--device cuda: the Hugging Face contenders (d) were skipped")
    contenders.append(zest_inprocess_contender(encoder, images))

    with tempfile.TemporaryDirectory(prefix="zest-bench-hf-") as hf_dir, maybe_server(args, record) as server:
        if not args.skip_hf:
            try:
                parity, hf_model, processor, classifier = setup_hf(model, loaded.preprocess, encoder.preprocess_cfg,
                                                                   Path(hf_dir))
                record["hf_parity"] = parity
                contenders.append(hf_raw_contender(hf_model, processor, images, args.hf_batch_size))
                contenders.append(hf_pipeline_contender(classifier, images, PIPELINE_LABELS, args.pipeline_batch_size))
            except Exception as exc:  # e.g. zest-tiny: no transformers.CLIPModel equivalent
                record["errors"]["hf"] = error_text(exc)
                print(f"(d) skipped: {error_text(exc, 500)}")
        if server is not None:
            for n in args.clients:
                n_requests = max(args.images, n if args.quick else 2 * n)  # full: each client sends >= 2
                contenders.append(zest_http_contender(server.url, payloads, n, n_requests, args.request_timeout))
        print(f"contenders: {', '.join(c.key for c in contenders)}")
        samples = interleave({c.key: repeat_for(c.run, args.min_time) for c in contenders}, args.repeats, args.warmup)

    record["env"]["load_avg_at_end"] = list(os.getloadavg())
    record["contenders"] = {c.key: {"group": c.group, "description": c.description, "params": c.params,
                                    **summarize(samples[c.key])} for c in contenders}
    report(record, contenders)
    write_results(f"image-{slug(args.model)}", record, args.quick)
    return 0


@contextlib.contextmanager
def maybe_server(args, record: dict) -> Iterator[Any]:
    """The zest server for (c), or None if it is skipped or fails to start (the reason is recorded)."""
    with contextlib.ExitStack() as stack:
        server = None
        if not args.skip_http:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zest-bench-data-")))
            env = {"ZEST_MODEL": args.model, "ZEST_DATA_DIR": str(data_dir), **rec_model_env(data_dir, record),
                   **device_env(args.device)}
            try:
                server = stack.enter_context(serve(env, f"image-{slug(args.model)}", timeout=args.start_timeout,
                                                   log_dir=args.log_dir, root=args.server_root))
                record["server"] = {"ready_s": server.ready_s, "log": str(server.log_path)}
                print(f"server ready in {server.ready_s:.1f}s at {server.url}")
            except Exception as exc:
                record["errors"]["http"] = error_text(exc)
                print(f"(c) skipped: the server did not start: {error_text(exc, 1500)}")
        yield server


def report(record: dict, contenders: list[Contender]) -> None:
    """Table, ratios to (a), targets, notes (all also stored in `record`)."""
    res = record["contenders"]
    limits = {k: v for k, v in res.items() if v["group"] == "a"}
    best_key = max(limits, key=lambda k: limits[k]["rate_median"])
    best = limits[best_key]["rate_median"]
    record["limit"] = {"key": best_key, "batch_size": limits[best_key]["params"]["batch_size"], "images_per_s": best}
    for v in res.values():
        v["ratio_to_limit"] = v["rate_median"] / best

    rows = []
    for c in contenders:
        v = res[c.key]
        lat = v["latency_ms"]
        rows.append([c.key + (" *" if c.key == best_key else ""), v["rate_median"], v["ratio_to_limit"],
                     lat.get("p50"), lat.get("p95"), lat.get("p99"), v["errors"]])
    print_table(["contender", "images/s", "x limit", "p50 ms", "p95 ms", "p99 ms", "errors"], rows,
                title=f"{record['model']}: median of {len(next(iter(res.values()))['rates'])} interleaved rounds "
                      f"(* = the limit; latency: per batch for a, per request for c)")

    def rate(key: str) -> float | None:
        return res[key]["rate_median"] if key in res else None

    def ratio(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y else None

    zest, http8 = rate("b:zest-inproc"), rate("c:http@8")
    hf_raw, hf_pipe = rate("d:hf-raw"), rate("d:hf-pipeline")
    http8_errors = res.get("c:http@8", {}).get("errors", 0)
    record["targets"] = [
        check_target("(b) zest in-process / (a) limit", ratio(zest, best), 0.9),
        check_target("(c) zest HTTP, 8 clients / (a) limit", ratio(http8, best), 0.8, errors=http8_errors),
        check_target("(b) zest in-process / (d) HF raw get_image_features", ratio(zest, hf_raw), 1.5),
        check_target("(b) zest in-process / (d) HF zero-shot pipeline", ratio(zest, hf_pipe), 1.5),
        check_target("(c) zest HTTP, 8 clients / (d) HF zero-shot pipeline", ratio(http8, hf_pipe), 1.5,
                     errors=http8_errors),
    ]
    failed = {k: v["error_messages"] for k, v in res.items() if v["errors"]}
    if failed:
        print("\nFailed requests (first messages; the server log has the tracebacks):")
        for key, messages in failed.items():
            print(f"  {key}: {res[key]['errors']} failed: {messages[:2]}")
    print_targets(record["targets"])
    notes = [
        "(a) and (b) run the same model object; (d) is converted from it (see hf_parity).",
        "(b), (d) start from decoded PIL images; (c) starts from JPEG bytes on the client and includes "
        "multipart upload, decoding, preprocessing, adaptive batching and JSON of a full embedding.",
        "(c) clients run in this process and share the CPU with the server.",
        f"(d) hf-pipeline also encodes its {len(PIPELINE_LABELS)} candidate labels with the text tower on every "
        "call (the pipeline has no label cache); zest's /classify caches class embeddings.",
    ]
    if record["errors"]:
        notes.append(f"skipped/failed: {record['errors']}")
    record["notes"] += notes
    print("\nNotes\n" + "\n".join(f"  - {n}" for n in notes))


if __name__ == "__main__":
    raise SystemExit(main())
