"""Run every benchmark, one after the other, each in its own process; print a summary of the targets.

    python3 benchmarks/run_all.py --quick       # smoke run of everything (minutes)
    python3 benchmarks/run_all.py               # the full recorded run (long: see benchmarks/README.md)
    python3 benchmarks/run_all.py --only image --image-models zest-tiny

Each benchmark writes its own JSON under benchmarks/results/; this script adds run_all[.quick].json with
the exit codes, durations and every PASS/MISS line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import RESULTS_DIR  # noqa: E402
from benchmarks.harness.environment import env_info  # noqa: E402
from benchmarks.harness.report import slug, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCHES = ("image", "classify", "runtimes", "rec", "peer")


def result_file(name: str, model: str, quick: bool) -> Path:
    stem = {"image": f"image-{slug(model)}", "classify": f"classify-{slug(model)}", "rec": "rec",
            "peer": f"peer-{slug(model)}", "runtimes": f"runtimes-{slug(model)}"}[name]
    return RESULTS_DIR / f"{stem}{'.quick' if quick else ''}.json"


def jobs(names: list[str], args: argparse.Namespace) -> list[tuple[str, str | None, list[str]]]:
    """(benchmark, model, command line) for every run: bench_image once per --image-models entry."""
    out = []
    for name in names:
        models = (args.image_models.split(",") if name == "image" else [args.model] if name in ("classify", "runtimes", "peer")
                  else [None])
        for model in models:
            cmd = [sys.executable, str(HERE / f"bench_{name}.py")] + (["--model", model] if model else [])
            if args.quick:
                cmd.append("--quick")
            for flag in ("server_root", "log_dir", "threads"):
                value = getattr(args, flag)
                if value is not None:
                    cmd += [f"--{flag.replace('_', '-')}", str(value)]
            out.append((name, model, cmd))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {', '.join(BENCHES)}")
    ap.add_argument("--model", default="ViT-B-32/random", help="model spec for the classify benchmark")
    ap.add_argument("--image-models", default="ViT-B-32/random,zest-tiny",
                    help="model specs the image benchmark runs for, comma-separated")
    ap.add_argument("--server-root", type=Path, default=None)
    ap.add_argument("--log-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    summary = {"benchmark": "run_all", "quick": args.quick, "env": env_info(), "runs": []}
    t_all = time.perf_counter()
    for name, model, cmd in jobs(names, args):
        print(f"\n{'=' * 100}\n$ {' '.join(cmd)}\n{'=' * 100}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        run = {"name": name, "model": model, "cmd": cmd, "rc": rc, "seconds": time.perf_counter() - t0}
        path = result_file(name, model or "", args.quick)
        if path.is_file() and path.stat().st_mtime >= time.time() - run["seconds"] - 5:
            data = json.loads(path.read_text())
            run["results"] = str(path.relative_to(HERE.parent))
            run["targets"] = data.get("targets", [])
            run["errors"] = data.get("errors", {})
        summary["runs"].append(run)
    summary["seconds"] = time.perf_counter() - t_all

    print(f"\n{'=' * 100}\nSummary ({summary['seconds'] / 60:.1f} min)")
    for run in summary["runs"]:
        label = f"{run['name']} {run['model'] or ''}".strip()
        print(f"  {label:<26} rc={run['rc']}  {run['seconds'] / 60:5.1f} min  {run.get('results', '(no results)')}")
        for t in run.get("targets", []):
            value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
            print(f"      [{t['verdict']:>4}] {t['target']}: {value} ({t['op']} {t['threshold']})")
        for key, err in (run.get("errors") or {}).items():
            print(f"      error[{key}]: {str(err)[:200]}")
    write_results("run_all", summary, args.quick)
    return 0 if all(r["rc"] == 0 for r in summary["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
