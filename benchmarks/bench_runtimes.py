"""CPU fast paths (`ZEST_RUNTIME`) against raw fp32 open_clip, in process, interleaved in one run.

For each runtime the model is converted exactly as the server converts it (models/runtimes.py), and the
fidelity gate's report is recorded next to the speed: a runtime whose gate fails would be refused at start-up
(the server then serves torch), but its speed is still measured here so that the trade-off is visible.

Contenders, each on the same pre-made pixel tensors / token batches:

  raw@bsN        open_clip `model.encode_image` fp32, inference_mode, batch N (the reference)
  <runtime>@bsN  the runtime's image tower, batch N
  text: raw / <runtime>, 1 and 32 short sentences per call (each batch cut to its longest sequence, as zest does)

`bf16` is torch under bf16 autocast, as zest serves it on CPU (ZEST_RUNTIME=bf16 or ZEST_PRECISION=bf16): it
converts only on a CPU with native bf16 (AVX512-BF16 or AMX-BF16; the record says which this one is), and it is
never exact, so never one of auto's candidates.

`ZEST_RUNTIME=auto` is run too, as the server runs it (models/auto_runtime.py: its exact gate and its own
start-up probe), and its candidates are reported side by side: each one's speed over raw fp32 at every batch
size, its fidelity, and which one auto picks (`torch` is raw fp32 itself).

With --device cuda the runtimes (CPU paths) give way to the autocast precisions: raw fp32 vs fp16 vs bf16.

    python3 benchmarks/bench_runtimes.py                        # ViT-B-32/random: torch vs onnx, onnx-int8, int8, bf16
    python3 benchmarks/bench_runtimes.py --model zest-tiny --quick
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.cli import add_common_args, begin  # noqa: E402
from benchmarks.harness.inputs import make_images  # noqa: E402
from benchmarks.harness.report import check_target, error_text, print_table, print_targets, slug, write_results  # noqa: E402
from benchmarks.harness.timing import Sample, interleave, repeat_for, summarize  # noqa: E402

SENTENCES = ["a photo of a cat.", "a blurry photo of a dog on a beach.", "a red car parked next to a tree.",
             "text on a sign.", "a diagram of a bridge.", "a bird in flight over water.", "a bowl of soup.",
             "two people playing chess in a park."]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-32/random")
    ap.add_argument("--runtimes", default="onnx,onnx-int8,int8,bf16", help="comma-separated (torch is the reference)")
    ap.add_argument("--batch-sizes", default=None, help="image batch sizes (default 1,8,32; quick 1,8)")
    ap.add_argument("--images", type=int, default=None, help="images per contender per round (default 32, quick 8)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds each contender runs per round")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for models with random weights")
    add_common_args(ap)
    args = ap.parse_args(argv)
    from zest.models.auto_runtime import CANDIDATES

    # auto's candidates are always measured (the comparison auto makes)
    args.runtimes = list(dict.fromkeys([r for r in args.runtimes.split(",") if r and r != "torch"]
                                       + [c for c in CANDIDATES if c != "torch"]))
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("1,8" if args.quick else "1,8,32")).split(",")]
    args.images = args.images or (8 if args.quick else 32)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.min_time = args.min_time if args.min_time is not None else (0.5 if args.quick else 2.0)
    return args


def image_run(fn, pixels, batch_size: int):
    import torch

    def run() -> Sample:
        lat = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for chunk in pixels.split(batch_size):
                t = time.perf_counter()
                fn(chunk)
                lat.append(time.perf_counter() - t)
        return Sample(time.perf_counter() - t0, len(pixels), lat)

    return run


def text_run(fn, batches):
    import torch

    def run() -> Sample:
        n, t0 = 0, time.perf_counter()
        with torch.inference_mode():
            for tokens in batches:
                fn(tokens)
                n += len(tokens)
        return Sample(time.perf_counter() - t0, n)

    return run


def _ratio(record: dict[str, Any], runtime: str, load: str) -> float | None:
    """Speed of `runtime` (torch: raw fp32) at `load` ("bs8", "text1", ...) over raw fp32."""
    sep = "@" if load.startswith("bs") else ":"
    name = "raw" if runtime == "torch" else runtime
    contender = record["contenders"].get(f"{name}{sep}{load}")
    return contender["rate_median"] / record["contenders"][f"raw{sep}{load}"]["rate_median"] if contender else None


def auto_report(record: dict[str, Any], batch_sizes: list[int], candidates: tuple[str, ...]) -> None:
    """Every runtime side by side: speed over raw fp32 at each load, fidelity, the gate, and auto's pick among
    its candidates (the others are opt-in: never picked by auto)."""
    auto = record["auto"]
    probe = {c["runtime"]: c for c in auto["candidates"]}
    loads = [f"bs{b}" for b in batch_sizes] + ["text1", "text32"]
    rows = []
    for name in [*candidates, *(r for r in record["runtimes"] if r not in candidates)]:
        gate = record["runtimes"].get(name)
        cosine = 1.0 if name == "torch" else min(gate["min_image_cosine"], gate["min_text_cosine"]) if gate else None
        top1 = 1.0 if name == "torch" else gate["top1_agreement"] if gate else None
        admitted = "yes" if name == "torch" or (gate and gate["gate_passed"]) else "no" if gate else "-"
        exact = probe.get(name, {}).get("passed") if name in candidates else bool(gate and gate["exact"])
        seconds = probe.get(name, {}).get("seconds")
        rows.append([name + (" <- auto" if name == auto["chosen"] else ""), "yes" if name in candidates else "no",
                     *[f"{r:.2f}" if (r := _ratio(record, name, load)) else "-" for load in loads],
                     f"{cosine:.7f}" if cosine is not None else "-", f"{top1:.1%}" if top1 is not None else "-",
                     admitted, "yes" if exact else "no", f"{seconds * 1e3:.0f}" if seconds else "-"])
    print_table(["runtime", "auto candidate", *[f"x raw {load}" for load in loads], "min cosine", "top-1 agree",
                 "gate 0.999", "exact", "probe ms/round"], rows,
                title=f"ZEST_RUNTIME=auto picks {auto['chosen']} ({auto['reason']})")


def auto_target(record: dict[str, Any], bs: int) -> dict[str, Any]:
    """auto's pick against the fastest exact candidate of this run at image batch `bs` (1.0: it picked it)."""
    exact = [c["runtime"] for c in record["auto"]["candidates"] if c["passed"]]
    rates = {name: _ratio(record, name, f"bs{bs}") or 0.0 for name in exact}
    best = max(rates, key=rates.__getitem__)
    value = rates[record["auto"]["chosen"]] / rates[best] if rates[best] else None
    return check_target(f"auto's pick ({record['auto']['chosen']}) / fastest exact ({best}), images batch {bs}",
                        value, 0.95)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = begin(args)
    import torch

    from zest.models.auto_runtime import CANDIDATES, choose
    from zest.models.clip_encoder import ClipEncoder
    from zest.models.cpu_features import native_bf16
    from zest.models.runtimes import EXACT_COSINE, RUNTIMES, check_fidelity
    from zest.models.text_tower import content_lengths

    record: dict[str, Any] = {"benchmark": "runtimes", "quick": args.quick, "env": env, "model": args.model,
                              "config": vars(args), "runtimes": {}, "errors": {}, "cpu_native_bf16": native_bf16()}
    torch.manual_seed(args.seed)
    encoder = ClipEncoder.from_spec(args.model, device=args.device, precision="fp32")
    pixels = encoder.preprocess(make_images(args.images, (640, 480))).to(encoder.device)

    def trimmed(texts):
        tokens = encoder.tokenizer(texts)
        return tokens[:, : int(content_lengths(tokens, encoder._pad_id).max())]

    text_batches = {"text1": [trimmed([s]) for s in SENTENCES], "text32": [trimmed((SENTENCES * 4)[:32])]}
    reference = {"image": encoder.model.encode_image,
                 "text": encoder._encode_trimmed or encoder.model.encode_text}
    towers = {"raw": reference}
    if args.device == "cuda":  # the ONNX/int8 runtimes are CPU paths; on a GPU the choice is the autocast dtype
        text_batches = {k: [t.to(encoder.device) for t in v] for k, v in text_batches.items()}
        for precision in ("fp16", "bf16"):
            dtype = getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[precision])

            def autocast(fn, dtype=dtype):
                def run(x):
                    with torch.autocast("cuda", dtype=dtype):
                        return fn(x).float().cpu()
                return run

            towers[precision] = {"image": autocast(reference["image"]), "text": autocast(reference["text"])}
        reference = {k: (lambda fn: lambda x: fn(x).float().cpu())(fn) for k, fn in reference.items()}
        towers["raw"] = reference
        args.runtimes = []
    with tempfile.TemporaryDirectory(prefix="zest-bench-runtimes-") as cache:
        for name in args.runtimes:
            try:
                t = time.perf_counter()
                converted = RUNTIMES[name].convert(encoder, Path(cache))
                convert_s = time.perf_counter() - t
                candidate = copy.copy(encoder)
                candidate._use(converted)
                report = check_fidelity(name, encoder, candidate)
                record["runtimes"][name] = {"convert_s": convert_s, "gate_passed": report.passed,
                                            "exact": report.cosine >= EXACT_COSINE,
                                            **{k: v for k, v in vars(report).items() if k != "runtime"}}
                towers[name] = {"image": converted.image, "text": converted.text_trimmed or converted.text}
                print(f"{name}: converted in {convert_s:.1f}s; {report} -> {'admitted' if report.passed else 'REFUSED'}")
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot convert is a result, not a crash
                record["errors"][name] = error_text(exc)
                print(f"{name}: FAILED {error_text(exc, 300)}")
        if args.device == "cpu":  # auto, as the server runs it (its exports are the ones just made)
            t = time.perf_counter()
            choice = choose(encoder, Path(cache)).auto_choice
            record["auto"] = {**choice.to_json(), "start_s": time.perf_counter() - t, "exact_cosine": EXACT_COSINE}
            print(f"auto: {choice.summary()}")
        contenders = {}
        for name, t in towers.items():
            for bs in args.batch_sizes:
                contenders[f"{name}@bs{bs}"] = repeat_for(image_run(t["image"], pixels, bs), args.min_time)
            for kind, batches in text_batches.items():
                contenders[f"{name}:{kind}"] = repeat_for(text_run(t["text"], batches), args.min_time)
        samples = interleave(contenders, args.repeats, args.warmup)
    record["env"]["load_avg_at_end"] = list(os.getloadavg())
    record["contenders"] = {k: summarize(v) for k, v in samples.items()}

    rows = []
    for key, s in record["contenders"].items():
        name, what = key.split("@") if "@" in key else key.split(":")
        ref = record["contenders"][f"raw{'@' if '@' in key else ':'}{what}"]["rate_median"]
        rows.append([name, what, f"{s['rate_median']:.1f}", f"{s['rate_median'] / ref:.2f}"])
    print_table(["runtime", "load", "items/s", "x raw fp32"], rows, title=f"{args.model}, in process")
    if "auto" in record:
        auto_report(record, args.batch_sizes, CANDIDATES)
    # the target: the fast path (the best runtime the gate admits) >= 2x raw fp32 on images at batch 8
    bs = 8 if 8 in args.batch_sizes else args.batch_sizes[-1]
    raw = record["contenders"][f"raw@bs{bs}"]["rate_median"]
    admitted = ([n for n, r in record["runtimes"].items() if r["gate_passed"]] if args.device == "cpu"
                else [n for n in towers if n != "raw"])
    best = max(admitted, key=lambda n: record["contenders"][f"{n}@bs{bs}"]["rate_median"], default=None)
    value = record["contenders"][f"{best}@bs{bs}"]["rate_median"] / raw if best else None
    record["targets"] = [check_target(f"fast path ({best or 'none admitted'}) images in process, batch {bs}, "
                                      "x raw fp32", value, 2.0)]
    if "auto" in record:
        record["targets"].append(auto_target(record, bs))
    print_targets(record["targets"])
    write_results(f"runtimes-{slug(args.model)}", record, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
