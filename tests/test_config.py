"""Process-wide settings every service worker applies when it imports service/process.py."""

from __future__ import annotations

import json
import subprocess
import sys


def test_service_processes_run_blas_single_threaded(tmp_path):
    """numpy's OpenBLAS threads spin after each product and steal the cores the model's forward pass needs
    (a repeated 1000-label /classify cost 1.55 x /embed/image on ViT-B-32): every service process limits BLAS
    to its calling thread."""
    code = ("import json, numpy\n"
            "from threadpoolctl import threadpool_info\n"
            "before = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
            "import zest.service.process\n"
            "after = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
            "print(json.dumps([before, after]))\n")
    env = {"ZEST_DATA_DIR": str(tmp_path), "OPENBLAS_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         check=True).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    assert before and max(before) == 2  # numpy's BLAS would use 2 threads
    assert after and set(after) == {1}
