"""Tables, targets and the JSON files in benchmarks/results/."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Sequence

from . import RESULTS_DIR, ROOT


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            if x != x:  # nan
                return "-"
            return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
        return "-" if x is None else str(x)

    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def check_target(name: str, value: float | None, threshold: float, higher_is_better: bool = True,
                 errors: int = 0) -> dict[str, Any]:
    """A target line: PASS/MISS, N/A when the value could not be measured. Failed requests make it a
    MISS whatever the rate of the successful ones."""
    if value is None or value != value:
        verdict = "N/A"
    elif errors:
        verdict = "MISS"
    elif higher_is_better:
        verdict = "PASS" if value >= threshold else "MISS"
    else:
        verdict = "PASS" if value <= threshold else "MISS"
    op = ">=" if higher_is_better else "<="
    return {"target": name, "value": value, "threshold": threshold, "op": op, "verdict": verdict, "errors": errors}


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    print("\nTargets")
    for t in targets:
        value = "n/a" if t["value"] is None or t["value"] != t["value"] else f"{t['value']:.3f}"
        failed = f" -- {t['errors']} failed requests" if t.get("errors") else ""
        print(f"  [{t['verdict']:>4}] {t['target']}: {value} (target {t['op']} {t['threshold']}){failed}")


def write_results(name: str, payload: dict[str, Any], quick: bool = False) -> Path:
    """`benchmarks/results/<name>.json` (full runs) or `<name>.quick.json` (smoke runs), plus a
    timestamped copy under results/history/ so earlier runs are kept."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{name}.quick" if quick else name
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(text)
    history = RESULTS_DIR / "history"
    history.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (history / f"{stem}-{stamp}.json").write_text(text)
    print(f"\nresults written to {path.relative_to(ROOT)}")
    return path


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def slug(text: str) -> str:
    """A file-name-safe form of a model spec ("ViT-B-32/random" -> "ViT-B-32_random")."""
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)


def error_text(exc: BaseException, limit: int = 4000) -> str:
    return f"{type(exc).__name__}: {exc}"[:limit]
