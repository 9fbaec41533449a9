"""The whole server under a soak (no one module: the encoder, the recommender, the store and the caches
together): 32 clients mixing every kind of request for a bounded while, no 5xx, worker memory flat.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest
import requests

from tests.faults import limited_server, png_b64, server_log, shared_server, statuses, worker
from tests.server import Server


@pytest.fixture(scope="module")
def server(tiny_checkpoint, rec_model_dir, tmp_path_factory):
    with shared_server(tiny_checkpoint, rec_model_dir, tmp_path_factory.mktemp("soak")) as srv:
        yield srv


# -- 3b. 32 clients mixing everything for a bounded while: no 5xx, worker memory flat ----------------------
SOAK_CLIENTS = 32
SOAK_S = float(os.environ.get("ZEST_SOAK_S", "30"))  # the default run; `-m slow` runs the 2-minute one


def _rss_mb(srv: Server) -> dict[str, float]:
    out = {}
    for service in ("zest", "zest-clip-encoder", "zest-recommender"):
        try:
            out[service] = worker(srv, service).memory_info().rss / 2**20
        except (LookupError, psutil.Error):
            out[service] = float("nan")
    return out


def soak(srv: Server, seconds: float) -> None:
    """SOAK_CLIENTS clients, each cycling classify (label sets from a pool of 40, so the class cache fills and
    then only hits), /embed/text, /items upserts (ids from a pool of 400: updates, the catalogue stays
    bounded), /recommend with a new free-text history every time (the recommender's memo of texts,
    ZEST_TEXT_CACHE_SIZE=300, crosses its bound again and again) and reads. Memory is sampled every
    second; after the first third (warm-up: caches fill, allocators grow) it must stay flat."""
    log_start = len(server_log(srv))
    requests.post(f"{srv.url}/items", json={"items": [{"id": f"s{i}", "text": f"soak item {i}"} for i in range(10)]},
                  timeout=60)
    deadline = time.monotonic() + seconds
    results: list[tuple[str, object, float]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with requests.Session() as s:
            for n in range(100_000):
                if time.monotonic() > deadline:
                    return
                kind = ("classify", "embed", "items", "recommend", "read")[(c + n) % 5]
                k = c * 100_000 + n
                t = time.monotonic()
                try:
                    if kind == "classify":
                        r = s.post(f"{srv.url}/classify", timeout=60, json={
                            "images": [png_b64(k)], "labels": [f"class {k % 40} {j}" for j in range(3)]})
                    elif kind == "embed":
                        r = s.post(f"{srv.url}/embed/text", json={"texts": [f"soak text {k}"]}, timeout=60)
                    elif kind == "items":
                        r = s.post(f"{srv.url}/items", timeout=60,
                                   json={"items": [{"id": f"s{k % 400}", "text": f"soak item {k % 400} v{n}"}]})
                    elif kind == "recommend":
                        r = s.post(f"{srv.url}/recommend", timeout=60,
                                   json={"history": ["s1"], "history_texts": [f"a film about {k}"], "k": 5})
                    else:
                        r = s.get(f"{srv.url}/items/s{k % 10}", timeout=60)
                    outcome: object = r.status_code
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                with lock:
                    results.append((kind, outcome, time.monotonic() - t))

    samples: list[tuple[float, dict[str, float]]] = []
    threads = [threading.Thread(target=client, args=(c,)) for c in range(SOAK_CLIENTS)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - t0, _rss_mb(srv)))
        time.sleep(1.0)
    for th in threads:
        th.join(90)
    samples.append((time.monotonic() - t0, _rss_mb(srv)))
    outcomes = {o: sum(1 for r in results if r[1] == o) for o in {r[1] for r in results}}
    kinds = {k: sum(1 for r in results if r[0] == k) for k in {r[0] for r in results}}
    warm = [m for t, m in samples if t >= seconds / 3]
    growth = {svc: max(m[svc] for m in warm) - warm[0][svc] for svc in warm[0]}
    print(f"\nsoak: {len(results)} requests in {seconds:.0f} s from {SOAK_CLIENTS} clients {kinds}: {outcomes}; "
          f"p50 {sorted(r[2] for r in results)[len(results) // 2]:.2f} s, max {max(r[2] for r in results):.2f} s; "
          f"growth after warm-up (MB) { {k: round(v, 1) for k, v in growth.items()} }; RSS MB every ~10 s: "
          + "; ".join(f"{t:.0f}s " + "/".join(f"{v:.0f}" for v in m.values()) for t, m in samples[::10]))
    assert not any(t.is_alive() for t in threads)
    assert outcomes == {200: len(results)}, outcomes  # no 5xx, no 4xx, no hang
    assert len(results) >= SOAK_CLIENTS * 5
    for svc, mb in growth.items():  # flat: the caches are bounded
        assert mb < max(25.0, 0.05 * warm[0][svc]), (svc, growth, samples)
    assert not [s for s in statuses(server_log(srv)[log_start:]) if s >= 500]


def test_soak_32_clients_mixed_requests_no_5xx_and_flat_memory(server):
    soak(server, SOAK_S)


@pytest.mark.slow
def test_soak_two_minutes(tiny_checkpoint, rec_model_dir, tmp_path):
    with limited_server(tiny_checkpoint, rec_model_dir, tmp_path, ZEST_TEXT_CACHE_SIZE="300") as srv:
        soak(srv, 120)
