"""Export, import, migration and online backup of the vector store (store/dump.py, store/backup.py, `zest store`),
in process: embedded and milvus-lite (a file, as in tests/test_store.py). The live-server migration is in
tests/test_store_live.py."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from zest.models.errors import Conflict, InvalidInput, NotFound
from zest.service.cli import main as zest_main
from zest.store import backup as backups
from zest.store import dump, open_store
from zest.store.embedded import EmbeddedSnapshot, EmbeddedStore

BACKENDS = ["embedded", "milvus-lite"]
THUMB = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwg"  # a JPEG's start


def spec_for(kind: str, tmp_path, tag: str) -> tuple[str, str]:
    """(ZEST_VECTOR_STORE, ZEST_DATA_DIR) of a fresh store of `kind`."""
    if kind == "embedded":
        return "embedded", str(tmp_path / f"data-{tag}")
    return f"milvus-lite:{tmp_path / f'milvus-{tag}'}", str(tmp_path / f"data-{tag}")


def fill(spec: str, data_dir: str, n: int = 250, dim: int = 8, seed: int = 0) -> dict:
    """A CLIP collection (cosine, with thumbnails and unicode in the payloads), a second one and a catalogue (ip)."""
    rng = np.random.default_rng(seed)
    want: dict = {}
    coll = open_store(spec, "collections", data_dir=data_dir)
    cat = open_store(spec, "catalog", data_dir=data_dir)
    try:
        for store, name, metric, meta in [(coll, "c_photos", "cosine", {"model": "clip-a"}),
                                          (coll, "c_notes", "cosine", {"model": "clip-a"}),
                                          (cat, "rec_catalog_8", "ip", {"fingerprint": "fp1"})]:
            store.create_collection(name, dim, metric, meta)
            ids = [f"{name}/{i}/é" for i in range(n if name != "c_notes" else 7)]
            vecs = rng.normal(size=(len(ids), dim)).astype(np.float32)
            if metric == "cosine":
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            payloads = [{"kind": "image", "name": f"{i}.jpg", "metadata": {"n": k, "tag": "ünï"},
                         "thumbnail": {"jpeg": THUMB, "w": 64}} for k, i in enumerate(ids)]
            for a in range(0, len(ids), 100):
                store.upsert(name, ids[a:a + 100], vecs[a:a + 100], payloads[a:a + 100])
            want[name] = (meta, metric, dict(zip(ids, zip(vecs, payloads))))
    finally:
        coll.close()
        cat.close()
    return want


def check_same(spec: str, data_dir: str, want: dict) -> None:
    for role in ("collections", "catalog"):
        store = open_store(spec, role, data_dir=data_dir)
        try:
            for name, (meta, metric, records) in want.items():
                if dump.role_of(name) != role:
                    continue
                info = store.collection(name)
                assert info is not None and (info.dim, info.metric, info.meta) == (8, metric, meta)
                assert store.count(name) == len(records)
                got = store.get(name, list(records), with_vectors=True)
                assert set(got) == set(records)
                for i, (vec, payload) in records.items():
                    assert got[i].payload == payload
                    np.testing.assert_allclose(got[i].vector, vec, atol=1e-6)
        finally:
            store.close()


@pytest.mark.parametrize("target", BACKENDS)
@pytest.mark.parametrize("source", BACKENDS)
def test_export_import_round_trip(source, target, tmp_path):
    src_spec, src_dir = spec_for(source, tmp_path, "src")
    want = fill(src_spec, src_dir)
    out = tmp_path / "dump"
    assert zest_main(["store", "export", str(out), "--store", src_spec, "--data-dir", src_dir, "--quiet",
                      "--chunk-rows", "120"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["format"], manifest["version"]) == ("zest-store-dump", 1)
    entries = {e["store_name"]: e for e in manifest["collections"]}
    assert set(entries) == set(want)
    photos = entries["c_photos"]
    assert (photos["role"], photos["name"], photos["model"], photos["dim"], photos["count"]) == (
        "collections", "photos", "clip-a", 8, 250)
    assert [c["count"] for c in photos["chunks"]] == [120, 120, 10]  # streamed in chunks of at most 120
    assert entries["rec_catalog_8"]["model"] == "fp1"
    first = json.loads((out / photos["chunks"][0]["records"]).read_text().splitlines()[0])
    assert first["payload"]["thumbnail"]["jpeg"] == THUMB  # the payload is carried whole
    assert np.load(out / photos["chunks"][0]["vectors"]).shape == (120, 8)

    dst_spec, dst_dir = spec_for(target, tmp_path, "dst")
    assert zest_main(["store", "import", str(out), "--store", dst_spec, "--data-dir", dst_dir, "--quiet"]) == 0
    check_same(dst_spec, dst_dir, want)
    # importing again merges by id: nothing doubled
    assert zest_main(["store", "import", str(out), "--store", dst_spec, "--data-dir", dst_dir, "--quiet"]) == 0
    check_same(dst_spec, dst_dir, want)


def test_one_collection_or_the_catalogue(tmp_path):
    spec, data = spec_for("embedded", tmp_path, "src")
    want = fill(spec, data)
    assert zest_main(["store", "export", str(tmp_path / "one"), "--data-dir", data, "--collection", "notes",
                      "--quiet"]) == 0
    assert [e["store_name"] for e in dump.read_manifest(tmp_path / "one")["collections"]] == ["c_notes"]
    assert zest_main(["store", "export", str(tmp_path / "cat"), "--data-dir", data, "--catalog", "--quiet"]) == 0
    assert [e["store_name"] for e in dump.read_manifest(tmp_path / "cat")["collections"]] == ["rec_catalog_8"]
    assert zest_main(["store", "export", str(tmp_path / "none"), "--data-dir", data, "--collection", "nope"]) == 2
    assert zest_main(["store", "export", str(tmp_path / "none"), "--data-dir", str(tmp_path / "typo")]) == 2
    # import only the catalogue from a full dump
    assert zest_main(["store", "export", str(tmp_path / "all"), "--data-dir", data, "--quiet"]) == 0
    dst = str(tmp_path / "dst")
    assert zest_main(["store", "import", str(tmp_path / "all"), "--data-dir", dst, "--catalog", "--quiet"]) == 0
    assert not (tmp_path / "dst" / "store-collections.sqlite3").exists()
    check_same("embedded", dst, {"rec_catalog_8": want["rec_catalog_8"]})


def test_import_refuses_another_model_and_bad_dumps(tmp_path, capsys):
    spec, data = spec_for("embedded", tmp_path, "src")
    fill(spec, data)
    out = tmp_path / "dump"
    dump.export(dump.store_sources(spec, data), out)
    # an existing collection made by another model: refused (409) before anything is written
    dst = tmp_path / "dst"
    other = EmbeddedStore(dst / "store-collections.sqlite3")
    other.create_collection("c_photos", 8, "cosine", {"model": "clip-b"})
    other.close()
    with pytest.raises(Conflict, match="clip-b.*clip-a"):
        dump.load([(r, dump.DumpReader(out, r)) for r in ("collections", "catalog")],
                  lambda role: open_store("embedded", role, data_dir=dst))
    assert zest_main(["store", "import", str(out), "--data-dir", str(dst), "--quiet"]) == 2
    assert "not comparable" in capsys.readouterr().err
    snap = EmbeddedSnapshot(dst / "store-collections.sqlite3")
    assert [c.name for c in snap.collections()] == ["c_photos"] and snap.count("c_photos") == 0
    snap.close()
    # a damaged chunk, a newer format, an unfinished export, a non-empty export directory
    manifest = json.loads((out / "manifest.json").read_text())
    chunk = out / manifest["collections"][0]["chunks"][0]["vectors"]
    chunk.write_bytes(chunk.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InvalidInput, match="damaged"):
        list(dump.DumpReader(out).scan(manifest["collections"][0]["store_name"], with_vectors=True))
    (out / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(InvalidInput, match="version 99"):
        dump.read_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(InvalidInput, match="not a complete zest dump"):
        dump.read_manifest(out)
    with pytest.raises(Conflict, match="not empty"):
        dump.export(dump.store_sources(spec, data), out)


def test_migrate_with_count_check(tmp_path):
    spec, data = spec_for("embedded", tmp_path, "src")
    want = fill(spec, data)
    to = f"milvus-lite:{tmp_path / 'm'}"
    assert zest_main(["store", "migrate", "--to", to, "--data-dir", data, "--quiet"]) == 0
    check_same(to, data, want)
    assert zest_main(["store", "migrate", "--to", "embedded", "--data-dir", data]) == 2  # onto itself


def test_backup_during_8_writers_has_every_acknowledged_write(tmp_path):
    """8 threads write (upserts and deletes) into the embedded store while a backup is taken from another
    connection: the restored store holds every write acknowledged before the backup began, and is a state the
    store really had (each record whole; a deleted record never back)."""
    data = tmp_path / "data"
    store = EmbeddedStore(data / "store-collections.sqlite3")
    store.create_collection("c_live", 4, "ip", {"model": "m"})
    acked: list[tuple[float, str, str]] = []  # (time acknowledged, op, id)
    lock, stop = threading.Lock(), threading.Event()

    def writer(w: int) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            ids = [f"w{w}-{n + j}" for j in range(5)]
            store.upsert("c_live", ids, np.full((5, 4), w + 1, np.float32), [{"w": w, "n": n + j} for j in range(5)])
            done = time.monotonic()
            ops = [(done, "put", i) for i in ids]
            if n % 25 == 0:
                store.delete("c_live", [ids[0]])
                ops.append((time.monotonic(), "del", ids[0]))
            with lock:
                acked.extend(ops)
            n += 5

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    began = time.monotonic()
    assert zest_main(["store", "backup", str(tmp_path / "bk"), "--data-dir", str(data)]) == 0
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    store.close()
    with lock:
        before = [(op, i) for t, op, i in acked if t < began]
    assert len(before) > 100 and len(acked) > len(before)  # the writers ran before, during and after it
    restored = tmp_path / "restored"
    assert zest_main(["store", "restore", str(tmp_path / "bk"), "--data-dir", str(restored)]) == 0
    back = EmbeddedStore(restored / "store-collections.sqlite3")
    try:
        state: dict[str, bool] = {}
        for op, i in before:
            state[i] = op == "put"
        present = set(back.get("c_live", list(state)))
        # a put acknowledged before the backup began is in it, unless its delete was still to come: that delete
        # may be acknowledged after `began` and still land before the backup's snapshot
        deleted_later = {i for t, op, i in acked if op == "del" and t >= began}
        assert {i for i, alive in state.items() if alive and i not in deleted_later} <= present
        assert not any(i in present for i, alive in state.items() if not alive)  # deleted before: stays gone
        all_ids = [r.id for batch in back.scan("c_live", with_vectors=True) for r in batch]
        for batch in back.scan("c_live", with_vectors=True):
            for r in batch:
                assert r.vector.tolist() == [r.payload["w"] + 1.0] * 4 and r.id == f"w{r.payload['w']}-{r.payload['n']}"
        assert back.count("c_live") == len(all_ids)
    finally:
        back.close()


def test_restore_refuses_a_store_in_use_and_existing_files(tmp_path):
    data = tmp_path / "data"
    store = EmbeddedStore(data / "store-catalog.sqlite3")
    store.create_collection("rec_catalog_4", 4, "ip", {"fingerprint": "f"})
    store.upsert("rec_catalog_4", ["a"], np.ones((1, 4)), [{"text": "x"}])
    backups.backup(data, tmp_path / "bk")
    store.upsert("rec_catalog_4", ["b"], np.ones((1, 4)), [{"text": "y"}])  # after the backup
    with pytest.raises(Conflict, match="--force"):
        backups.restore(tmp_path / "bk", data)
    with pytest.raises(Conflict, match="in use"):
        backups.restore(tmp_path / "bk", data, force=True)
    assert zest_main(["store", "import", str(tmp_path / "bk"), "--data-dir", str(data), "--quiet"]) == 2  # in use
    store.close()
    backups.restore(tmp_path / "bk", data, force=True)
    back = EmbeddedStore(data / "store-catalog.sqlite3")
    assert sorted(back.get("rec_catalog_4", ["a", "b"])) == ["a"]
    back.close()
    # a backup is also a source for import, into any backend
    to = f"milvus-lite:{tmp_path / 'm'}"
    assert zest_main(["store", "import", str(tmp_path / "bk"), "--store", to, "--quiet"]) == 0
    m = open_store(to, "catalog")
    assert m.count("rec_catalog_4") == 1
    m.close()
    (tmp_path / "bk" / "store-catalog.sqlite3").write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match="damaged"):
        backups.read_backup(tmp_path / "bk")
    with pytest.raises(NotFound):
        backups.backup(tmp_path / "empty", tmp_path / "bk2")
