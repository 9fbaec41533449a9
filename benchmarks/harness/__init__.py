"""Shared machinery of the benchmarks, one module per job (environment, timing, load, servers, inputs,
report, cli). The benchmarks are scripts a person runs by hand (`python3 benchmarks/bench_image.py`); they
are never collected by the unit tests.

Importing the package makes the run offline and quiet the way every benchmark wants it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "True",
               "TOKENIZERS_PARALLELISM": "false"}
os.environ.update({k: os.environ.get(k, v) for k, v in OFFLINE_ENV.items()})
