"""Run the ZESRec cold-item / warm-item benchmark on the vendored MovieLens ml-latest-small.

    python benchmarks/rec_eval.py            # 3 seeds, cold + warm protocols -> benchmarks/results/rec_eval.{md,json}
    python benchmarks/rec_eval.py --quick    # 1 seed, cold protocol, fewer epochs -> rec_eval_quick.{md,json}
    python benchmarks/rec_eval.py --transfer # the shipped model zero-shot on ml-100k -> rec_transfer.{md,json}

Any `zest rec eval` option can be added (see --help). LightFM rows need `pip install lightfm`
(`pip install -e '.[bench]'`; it compiles from source).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

if __name__ == "__main__":
    os.chdir(ROOT)
    from zest.training.rec.cli import eval_main

    raise SystemExit(eval_main(sys.argv[1:]))
