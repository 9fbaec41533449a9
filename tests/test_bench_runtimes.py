"""bench_runtimes.py runs end to end on the tiny model: the bf16 row, its fidelity, auto's pick (no numbers kept)."""

from __future__ import annotations


def test_bench_runtimes_quick_has_the_bf16_row_and_its_fidelity(tiny_checkpoint, monkeypatch, capsys):
    from benchmarks import bench_runtimes
    from zest.models import auto_runtime, cpu_features

    monkeypatch.setattr(cpu_features, "native_bf16", lambda: True)  # the row on any CPU (where not: an "errors" entry)
    records = []
    monkeypatch.setattr(bench_runtimes, "write_results", lambda name, record, quick: records.append((name, record)))
    assert bench_runtimes.main([f"--model=local-dir:{tiny_checkpoint}", "--quick", "--runtimes=bf16",
                                "--batch-sizes=1", "--images=2", "--min-time=0", "--repeats=1", "--warmup=0"]) == 0
    ((name, record),) = records
    assert name.startswith("runtimes-") and record["quick"] and record["cpu_native_bf16"] is True
    assert record["auto"]["chosen"] in auto_runtime.CANDIDATES
    bf16 = record["runtimes"]["bf16"]
    assert bf16["gate_passed"] and not bf16["exact"] and bf16["top1_agreement"] >= 0.99
    assert 0.999 <= min(bf16["min_image_cosine"], bf16["min_text_cosine"]) < 0.99999
    assert {"bf16@bs1", "bf16:text1", "bf16:text32", "raw@bs1"} <= set(record["contenders"])
    auto_table = capsys.readouterr().out.split("ZEST_RUNTIME=auto picks")[1]
    (row,) = [line.split() for line in auto_table.splitlines() if line.startswith("bf16 ")]
    # next to auto's candidates, never one of them: admitted by the 0.999 gate, not exact, not in auto's probe
    assert (row[1], row[-3], row[-2], row[-1]) == ("no", "yes", "no", "-")
