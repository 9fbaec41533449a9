"""bench_peer's memory record: every process of a server tree, labelled by its role (benchmarks/harness/memory.py)."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.harness.memory import tree_memory, zest_role

WORKER = [sys.executable, "-m", "_bentoml_impl.worker.service", "zest.service.app:Zest"]


def test_zest_roles_from_bentoml_command_lines():
    assert zest_role([sys.executable, "-m", "bentoml", "serve", "zest.service.app:Zest"], is_root=True) == "arbiter"
    assert zest_role(WORKER + ["--service-name", "zest-clip-encoder", "--fd", "3", "--worker-id", "1"],
                     is_root=False) == "encoder"
    assert zest_role(WORKER + ["--fd", "8", "--service-name", "zest", "--worker-id", "1"], is_root=False) == "api"
    assert zest_role(WORKER + ["--service-name", "zest-recommender", "--worker-id", "2"], is_root=False) \
        == "recommender#2"
    assert zest_role(["/usr/bin/tokenizer-helper"], is_root=False) == "other:tokenizer-helper"


def test_tree_memory_covers_every_process_of_the_tree():
    # a parent that starts a child holding ~64 MiB, so the tree has two processes of known size
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'b = bytearray(64 * 2**20); import time; time.sleep(60)']); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            memory = tree_memory(parent.pid, lambda cmdline, is_root: "parent" if is_root else "child")
            if len(memory["processes"]) == 2 and max(p["rss_mb"] for p in memory["processes"]) > 64:
                break
            time.sleep(0.2)
        roles = {p["role"]: p for p in memory["processes"]}
        assert set(roles) == {"parent", "child"} and roles["parent"]["pid"] == parent.pid
        assert roles["child"]["rss_mb"] > 64 > roles["parent"]["rss_mb"]
        assert memory["total_rss_mb"] == sum(p["rss_mb"] for p in memory["processes"])
        assert memory["total_pss_mb"] is None or 64 < memory["total_pss_mb"] <= memory["total_rss_mb"]
    finally:
        for child in __import__("psutil").Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    assert tree_memory(parent.pid)["processes"] == []  # gone: nothing, not an error
