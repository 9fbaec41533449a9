import sqlite3
import threading

import numpy as np
import pytest

from zest.service.catalog import ItemCatalog
from zest.store.embedded import EmbeddedStore
from zest.store.milvus import MilvusStore


def embed(texts):
    return np.array([[len(t), 1.0, 0.5] for t in texts], dtype=np.float32)


@pytest.fixture(params=["embedded", "milvus-lite"])
def open_catalog(request, tmp_path):
    opened = []

    def opener(fn=embed, fingerprint="v1", dim=3, legacy=None):
        store = (EmbeddedStore(tmp_path / "s.sqlite3") if request.param == "embedded"
                 else MilvusStore(str(tmp_path / "s.db"), index_type="FLAT", shared=False))
        c = ItemCatalog(store, fn, fingerprint, dim=dim, legacy_path=legacy)
        opened.append(c)
        return c

    yield opener
    for c in opened:
        c.close()


def test_upsert_get_delete_and_search(open_catalog):
    c = open_catalog()
    c.upsert([("a", "x"), ("b", "yy")])
    c.upsert([("a", "zzz"), ("c", "q")])
    assert len(c) == 3 and c.get("a").text == "zzz" and c.get("nope") is None
    assert [i for i, _ in c.search(np.array([1, 0, 0], np.float32), k=3)] == ["a", "b", "c"]
    c.delete(["b"])
    assert "b" not in c and len(c) == 2
    np.testing.assert_array_equal(c.vectors(["c", "a"])[:, 0], [1, 3])
    assert c.missing(["a", "zz"]) == ["zz"]
    assert [i for i, _ in c.search(np.array([1, 0, 0], np.float32), k=3, exclude=["a"])] == ["c"]
    with pytest.raises(KeyError):
        c.vectors(["b"])


def test_survives_restart(open_catalog):
    c = open_catalog()
    c.upsert([(f"i{k}", "t" * k) for k in range(1, 200)])
    c.delete(["i5"])
    before = c.search(np.array([1, 0, 0], np.float32), k=10)
    c.close()
    again = open_catalog()
    assert len(again) == 198 and again.search(np.array([1, 0, 0], np.float32), k=10) == before


def test_new_item_model_reembeds_stored_text(open_catalog):
    c = open_catalog()
    c.upsert([("a", "xx")])
    c.close()
    c2 = open_catalog(lambda ts: 10 * embed(ts), "v2")
    np.testing.assert_array_equal(c2.vectors(["a"])[0], [20, 10, 5])
    c2.close()
    c3 = open_catalog(embed, "v2")  # same fingerprint: stored vectors kept
    np.testing.assert_array_equal(c3.vectors(["a"])[0], [20, 10, 5])
    c3.close()
    wider = open_catalog(lambda ts: np.array([[len(t), 0, 0, 7] for t in ts], np.float32), "v3", dim=4)
    assert wider.get("a").text == "xx"  # another dimension: a new collection filled from the old one
    np.testing.assert_array_equal(wider.vectors(["a"])[0], [2, 0, 0, 7])
    assert [c.name for c in wider.store.collections()] == ["rec_catalog_4"]


def test_imports_the_pre_store_catalogue(open_catalog, tmp_path):
    legacy = tmp_path / "catalog.sqlite3"
    db = sqlite3.connect(legacy)
    db.executescript("CREATE TABLE items (id TEXT PRIMARY KEY, text TEXT NOT NULL, vector BLOB NOT NULL, "
                     "updated_at REAL NOT NULL); CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    db.execute("INSERT INTO meta VALUES('fingerprint', 'v1')")
    db.execute("INSERT INTO items VALUES('old', 'kept', ?, 5.0)", (np.array([9, 9, 9], np.float32).tobytes(),))
    db.commit()
    db.close()
    c = open_catalog(legacy=legacy)
    assert c.get("old").text == "kept" and c.get("old").updated_at == 5.0
    np.testing.assert_array_equal(c.vectors(["old"])[0], [9, 9, 9])  # same model: vectors kept


def test_failed_write_changes_nothing(open_catalog):
    c = open_catalog()
    c.upsert([("a", "x")])

    def broken(texts):
        raise RuntimeError("encoder down")

    c.embed = broken
    with pytest.raises(RuntimeError):
        c.upsert([("b", "y"), ("a", "changed")])
    with pytest.raises(ValueError):
        c.upsert([("d", "y"), ("d", "z")])
    assert len(c) == 1 and c.get("a").text == "x" and c.get("b") is None


def test_concurrent_writers_and_readers(tmp_path):
    c = ItemCatalog(EmbeddedStore(tmp_path / "s.sqlite3"), embed, "v1", dim=3)
    errors = []

    def writer(w):
        try:
            for k in range(50):
                c.upsert([(f"w{w}-{k}", "x" * (k + 1))])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        for _ in range(200):
            c.search(np.array([1, 0, 0], np.float32), k=3)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [threading.Thread(target=reader)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(c) == 200
