"""The store under a live server (tests/server.py): a 100k-vector collection migrated to Milvus while the server
answers reads of it; writes on a full disk answer 507, store nothing, and work again once space returns; the
whole server SIGKILLed during /items writes keeps every acknowledged item and half applies no batch.

The full disk is a tmpfs of a few MB mounted by the test (needs root or CAP_SYS_ADMIN; skipped otherwise). The
same refusal is also shown without privileges in `test_write_refused_by_file_size_limit`: RLIMIT_FSIZE=0 makes
every file write fail (EFBIG), in a child process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from tests.faults import limited_server
from tests.images import b64, png
from tests.server import ROOT, Server, milvus_lite_server, running_server
from zest.service.cli import main as zest_main
from zest.store.embedded import EmbeddedSnapshot, EmbeddedStore
from zest.store.milvus import MilvusStore

N_BIG = 100_000


@pytest.fixture
def milvus_server(tmp_path):
    with milvus_lite_server(tmp_path / "milvus") as port:
        yield port


def test_migrate_100k_collection_while_the_server_reads(tiny_checkpoint, tiny_encoder, rec_model_dir, tmp_path,
                                                        milvus_server):
    data = tmp_path / "home" / "data"
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N_BIG, tiny_encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"doc/{i}" for i in range(N_BIG)]
    store = EmbeddedStore(data / "store-collections.sqlite3", ann_min_rows=10 * N_BIG)
    store.create_collection("c_big", tiny_encoder.dim, "cosine", {"model": tiny_encoder.model_id})
    for a in range(0, N_BIG, 20_000):  # straight through the store API
        store.upsert("c_big", ids[a:a + 20_000], vectors[a:a + 20_000],
                     [{"kind": "text", "text": f"text {i}", "metadata": {"n": i}} for i in range(a, a + 20_000)])
    store.close()

    reads, failures, stop = [0], [], threading.Event()

    def reader() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            i = (k * 7919) % N_BIG
            for r in (requests.get(f"{srv.url}/collections/big", timeout=30),
                      requests.get(f"{srv.url}/collections/big/items/doc/{i}", timeout=30),
                      requests.post(f"{srv.url}/collections/big/search", timeout=30,
                                    json={"vector": vectors[i].tolist(), "k": 3})):
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))
            if not failures:
                hits = r.json()["results"]
                if hits[0]["id"] != f"doc/{i}":
                    failures.append(("wrong top hit", hits[0]["id"], i))
            reads[0] += 3

    t = threading.Thread(target=reader)
    with running_server(tiny_checkpoint, rec_model_dir, tmp_path / "home", ZEST_ANN_MIN_ROWS=str(10 * N_BIG)) as srv:
        try:
            t.start()
            t0 = time.monotonic()
            to = f"milvus://127.0.0.1:{milvus_server}"
            assert zest_main(["store", "migrate", "--to", to, "--data-dir", str(data), "--collection", "big",
                              "--quiet"]) == 0
            took = time.monotonic() - t0
            stop.set()
            t.join(60)
            assert not failures, failures[:5]
            assert reads[0] >= 30, f"only {reads[0]} reads in {took:.0f}s of migration"
            assert requests.get(f"{srv.url}/collections/big", timeout=30).json()["count"] == N_BIG
        finally:
            stop.set()
    m = MilvusStore(f"http://127.0.0.1:{milvus_server}")
    try:
        info = m.collection("c_big")
        assert (info.dim, info.metric, info.meta) == (tiny_encoder.dim, "cosine", {"model": tiny_encoder.model_id})
        assert m.count("c_big") == N_BIG
        sample = [int(i) for i in rng.choice(N_BIG, 200, replace=False)]
        got = m.get("c_big", [ids[i] for i in sample], with_vectors=True)
        for i in sample:
            assert got[ids[i]].payload == {"kind": "text", "text": f"text {i}", "metadata": {"n": i}}
            np.testing.assert_allclose(got[ids[i]].vector, vectors[i], atol=1e-6)
    finally:
        m.close()


# -- a full disk ---------------------------------------------------------------------------------------------------
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False,
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _fill(path: Path) -> Path:
    """Truncate the stores' WAL files (so the next commit must grow one), then fill the disk to the last byte."""
    for db in path.glob("store-*.sqlite3"):
        con = sqlite3.connect(db, timeout=10)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: every byte that fits is written, none left over
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_full_disk_refuses_writes_keeps_reads_and_recovers(tiny_checkpoint, rec_model_dir, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "24m"):
        pytest.skip("mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN); "
                    "test_write_refused_by_file_size_limit shows the refusal without it")
    try:
        with running_server(tiny_checkpoint, rec_model_dir, tmp_path / "home", ZEST_DATA_DIR=str(disk)) as srv:
            url = srv.url

            def post(path: str, body: dict) -> requests.Response:
                return requests.post(f"{url}{path}", json=body, timeout=60)

            assert post("/collections", {"name": "keep"}).status_code == 200
            r = post("/collections/keep/items", {"items": [{"id": "a", "text": "a red car"},
                                                            {"id": "b", "text": "a cat"}]})
            assert r.status_code == 200, r.text
            assert post("/items", {"items": [{"id": "m1", "text": "A space opera"}, {"id": "m2", "text": "A comedy"}]}
                        ).status_code == 200

            filler = _fill(disk)
            writes = [("POST", "/collections/keep/items", {"items": [{"id": "c", "text": "a blue boat " * 50}]}),
                      ("POST", "/collections", {"name": "fresh"}),
                      ("DELETE", "/collections/keep/items/a", None),
                      ("POST", "/items", {"items": [{"id": "m3", "text": "A documentary " * 50}]}),
                      ("DELETE", "/items/m1", None)]
            for method, path, body in writes:
                r = requests.request(method, f"{url}{path}", json=body, timeout=60)
                assert r.status_code == 507, (method, path, r.status_code, r.text)
                assert set(r.json()) == {"error"} and "nothing was stored" in r.json()["error"]
            # reads go on, and show nothing of the refused writes
            assert requests.get(f"{url}/collections/keep", timeout=30).json()["count"] == 2
            assert [c["name"] for c in requests.get(f"{url}/collections", timeout=30).json()["collections"]] == ["keep"]
            assert requests.get(f"{url}/collections/keep/items/a", timeout=30).status_code == 200
            assert requests.get(f"{url}/collections/keep/items/c", timeout=30).status_code == 404
            r = post("/collections/keep/search", {"text": "a red car", "k": 5})
            assert r.status_code == 200 and sorted(x["id"] for x in r.json()["results"]) == ["a", "b"]
            assert requests.get(f"{url}/items/m1", timeout=30).status_code == 200
            assert requests.get(f"{url}/items/m3", timeout=30).status_code == 404
            r = post("/recommend", {"history": ["m2"], "k": 5})
            assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == ["m1"]
            assert post("/classify", {"labels": ["novel label one", "novel label two"],  # its cache: unwritable
                                      "images": [b64(png("red", (32, 32)))]}).status_code == 200
            assert post("/embed/text", {"texts": ["hello"]}).status_code == 200

            filler.unlink()  # space returns: the same writes succeed
            for method, path, body in writes:
                r = requests.request(method, f"{url}{path}", json=body, timeout=60)
                assert r.status_code == 200, (method, path, r.status_code, r.text)
            assert requests.get(f"{url}/collections/keep", timeout=30).json()["count"] == 2  # +c, -a
            assert requests.get(f"{url}/items/m1", timeout=30).status_code == 404
            assert requests.get(f"{url}/items/m3", timeout=30).status_code == 200
    finally:
        try:
            # what is on disk is exactly what was acknowledged
            for role, name, want in (("collections", "c_keep", ["b", "c"]), ("catalog", None, ["m2", "m3"])):
                snap = EmbeddedSnapshot(disk / f"store-{role}.sqlite3")
                name = name or next(c.name for c in snap.collections())
                assert sorted(r.id for b in snap.scan(name) for r in b) == want
                snap.close()
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True, timeout=30)


def test_write_refused_by_file_size_limit(tmp_path):
    """Without privileges: RLIMIT_FSIZE=0 in a child process makes every file write fail (EFBIG), as a read-only
    or full disk would; the write answers InsufficientStorage, nothing changes, and it works once lifted."""
    script = textwrap.dedent(f"""
        import resource, numpy as np
        from zest.models.errors import InsufficientStorage
        from zest.store.embedded import EmbeddedStore
        s = EmbeddedStore({str(tmp_path / "s.sqlite3")!r})
        s.create_collection("c", 4, "ip", {{}})
        s.upsert("c", ["a", "b"], np.ones((2, 4)), [{{}}, {{}}])
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))
        refused = 0
        for write in (lambda: s.upsert("c", ["x"], np.ones((1, 4)), [{{}}]), lambda: s.delete("c", ["a"]),
                      lambda: s.create_collection("d", 4)):
            try:
                write()
            except InsufficientStorage:
                refused += 1
        during = (s.count("c"), sorted(s.get("c", ["a", "b", "x"])), [c.name for c in s.collections()])
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        s.upsert("c", ["y"], np.ones((1, 4)), [{{}}])
        s.close()
        s = EmbeddedStore({str(tmp_path / "s.sqlite3")!r})
        print(refused, during, sorted(s.get("c", ["a", "b", "x", "y"])))
    """)
    r = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "3 (2, ['a', 'b'], ['c']) ['a', 'b', 'y']"


def test_backup_of_a_live_server_during_8_writers(tiny_checkpoint, rec_model_dir, tmp_path):
    """`zest store backup` on the data directory of a server that 8 clients are writing to: the backup holds
    every item acknowledged before it began, each item whole, and restores into a new data directory."""
    acked: list[tuple[float, str]] = []
    lock, stop, failures = threading.Lock(), threading.Event(), []
    with running_server(tiny_checkpoint, rec_model_dir, tmp_path / "home") as srv:
        try:
            assert requests.post(f"{srv.url}/collections", json={"name": "live"}, timeout=60).status_code == 200

            def writer(w: int) -> None:
                n = 0
                while not stop.is_set() and n < 400:
                    ids = [f"w{w}-{n}", f"w{w}-{n + 1}"]
                    r = requests.post(f"{srv.url}/collections/live/items", timeout=60, json={"items": [
                        {"id": i, "text": f"note {i}", "metadata": {"writer": w}} for i in ids]})
                    if r.status_code != 200:
                        failures.append(r.text[:200])
                        return
                    done = time.monotonic()
                    with lock:
                        acked.extend((done, i) for i in ids)
                    n += 2

            threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
            for t in threads:
                t.start()
            time.sleep(3)
            began = time.monotonic()
            assert zest_main(["store", "backup", str(tmp_path / "bk"),
                              "--data-dir", str(tmp_path / "home" / "data")]) == 0
            time.sleep(2)
            stop.set()
            for t in threads:
                t.join(60)
            assert not failures, failures[:3]
        finally:
            stop.set()
    before = {i for t, i in acked if t < began}
    assert len(before) >= 16 and len(acked) > len(before), (len(before), len(acked))
    restored = tmp_path / "restored"
    assert zest_main(["store", "restore", str(tmp_path / "bk"), "--data-dir", str(restored)]) == 0
    snap = EmbeddedSnapshot(restored / "store-collections.sqlite3")
    try:
        records = {r.id: r for b in snap.scan("c_live", with_vectors=True) for r in b}
    finally:
        snap.close()
    assert before <= set(records)
    for i, r in records.items():
        assert r.payload == {"kind": "text", "text": f"note {i}", "metadata": {"writer": int(i[1:].split("-")[0])}}
        assert abs(float(np.linalg.norm(r.vector)) - 1) < 1e-5


def test_milvus_refusing_a_write_for_disk_is_507(tmp_path, monkeypatch):
    """Milvus's own disk protection ("quota exceeded[reason=disk quota exceeded ...]") is the same 507; its other
    errors are not."""
    from pymilvus.exceptions import MilvusException

    from zest.models.errors import InsufficientStorage

    m = MilvusStore(str(tmp_path / "m.db"), index_type="FLAT", shared=False)
    try:
        m.create_collection("c", 4)
        m.upsert("c", ["a"], np.ones((1, 4)), [{}])

        def refuse(*_, **__):
            raise MilvusException(code=53, message="quota exceeded[reason=disk quota exceeded, please allocate more "
                                                   "resources]")

        monkeypatch.setattr(m.client, "upsert", refuse)
        monkeypatch.setattr(m.client, "delete", refuse)
        with pytest.raises(InsufficientStorage, match="disk quota exceeded"):
            m.upsert("c", ["b"], np.ones((1, 4)), [{}])
        with pytest.raises(InsufficientStorage):
            m.delete("c", ["a"])
        monkeypatch.setattr(m.client, "upsert", lambda *_, **__: (_ for _ in ()).throw(
            MilvusException(code=1100, message="invalid parameter")))
        with pytest.raises(MilvusException):
            m.upsert("c", ["b"], np.ones((1, 4)), [{}])
        monkeypatch.undo()
        assert m.count("c") == 1
    finally:
        m.close()


def _kill_everything(srv: Server) -> None:
    """SIGKILL the arbiter and every worker at once (they run in sessions of their own): no drain, no flush."""
    procs = [psutil.Process(srv.proc.pid)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_sigkill_during_item_writes_keeps_every_acknowledged_item(tiny_checkpoint, rec_model_dir, tmp_path):
    """Writers upsert batches of 5 new items (and rewrite one shared item) until the server is killed
    mid-stream. After a restart on the same data: every batch that got a 200 is there with its text, and
    every batch is all there or not there at all -- the one that was in flight included."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    data = {"ZEST_DATA_DIR": str(tmp_path / "data")}
    acked: list[list[dict]] = []
    sent: list[list[dict]] = []
    lock = threading.Lock()
    killed = threading.Event()
    refused: list[str] = []

    def writer(w: int) -> None:
        with requests.Session() as s:
            for n in range(2000):
                if killed.is_set():
                    return
                batch = [{"id": f"w{w}-{n}-{j}", "text": f"writer {w} batch {n} item {j}"} for j in range(5)]
                batch.append({"id": "shared", "text": f"writer {w} batch {n} shared"})
                with lock:
                    sent.append(batch)
                try:
                    r = s.post(f"{srv.url}/items", json={"items": batch}, timeout=30)
                except requests.RequestException:
                    return
                with lock:
                    if r.status_code == 200:
                        acked.append(batch)
                    elif not killed.is_set():
                        refused.append(r.text)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    with limited_server(tiny_checkpoint, rec_model_dir, tmp_path / "a", **data) as srv:
        for th in threads:
            th.start()
        t0 = time.monotonic()
        while len(acked) < 40 and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        killed.set()
        _kill_everything(srv)
        for th in threads:
            th.join(30)
    assert len(acked) >= 40, "too few writes before the kill: the test proves nothing"
    assert not refused, refused[:3]
    with limited_server(tiny_checkpoint, rec_model_dir, tmp_path / "b", **data) as srv:
        def item(item_id: str) -> dict | None:
            r = requests.get(f"{srv.url}/items/{item_id}", timeout=30)
            assert r.status_code in (200, 404), r.text
            return r.json() if r.status_code == 200 else None

        for batch in acked:
            for it in batch[:-1]:
                assert (item(it["id"]) or {}).get("text") == it["text"], it
        acked_ids = {b[0]["id"] for b in acked}
        unacked = [b for b in sent if b[0]["id"] not in acked_ids]
        partial = []
        for batch in unacked:  # in flight at the kill: all or nothing
            present = [item(it["id"]) is not None for it in batch[:-1]]
            if any(present) and not all(present):
                partial.append(batch[0]["id"])
        assert not partial, partial
        shared = item("shared")["text"]
        assert any(b[-1]["text"] == shared for b in sent)  # one writer's whole write, not a mix
        # the vectors are there too: the acknowledged items rank (a half-written row would fail here)
        ids = [it["id"] for b in acked[-10:] for it in b[:-1]]
        r = requests.post(f"{srv.url}/recommend", json={"history": ids[:3], "candidates": ids, "k": 5}, timeout=60)
        assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
        total = requests.post(f"{srv.url}/items", json={"items": [{"id": "after", "text": "after the kill"}]},
                              timeout=60).json()["total"]
        print(f"\n{len(acked)} acknowledged batches of 6 before SIGKILL, {len(unacked)} in flight; after restart "
              f"{total - 1} items, every acknowledged one there, no batch half applied")
