import threading

import numpy as np
import pytest

from zest.service.catalog import ItemCatalog


def embed(texts):
    return np.array([[len(t), 1.0, 0.5] for t in texts], dtype=np.float32)


def test_upsert_get_delete_and_order(tmp_path):
    c = ItemCatalog(tmp_path / "c.db", embed, "v1")
    c.upsert([("a", "x"), ("b", "yy")])
    c.upsert([("a", "zzz"), ("c", "q")])
    ids, vecs = c.snapshot()
    assert ids == ["a", "b", "c"]
    np.testing.assert_array_equal(vecs[:, 0], [3, 2, 1])
    assert c.get("a").text == "zzz" and c.get("nope") is None
    c.delete(["b"])
    assert c.snapshot()[0] == ["a", "c"] and "b" not in c and len(c) == 2
    np.testing.assert_array_equal(c.vectors(["c", "a"])[:, 0], [1, 3])
    assert c.missing(["a", "zz"]) == ["zz"]


def test_survives_restart(tmp_path):
    c = ItemCatalog(tmp_path / "c.db", embed, "v1")
    c.upsert([(f"i{k}", "t" * k) for k in range(1, 2000)])  # grows the buffer several times
    c.delete(["i5"])
    before = c.snapshot()
    c.close()
    again = ItemCatalog(tmp_path / "c.db", embed, "v1")
    after = again.snapshot()
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])


def test_new_item_model_reembeds_stored_text(tmp_path):
    ItemCatalog(tmp_path / "c.db", embed, "v1").upsert([("a", "xx")])
    c2 = ItemCatalog(tmp_path / "c.db", lambda ts: 10 * embed(ts), "v2")
    np.testing.assert_array_equal(c2.snapshot()[1][0], [20, 10, 5])
    c3 = ItemCatalog(tmp_path / "c.db", embed, "v2")  # same fingerprint: stored vectors kept
    np.testing.assert_array_equal(c3.snapshot()[1][0], [20, 10, 5])


def test_failed_write_changes_nothing(tmp_path):
    c = ItemCatalog(tmp_path / "c.db", embed, "v1")
    c.upsert([("a", "x")])

    def broken(texts):
        raise RuntimeError("encoder down")

    c.embed = broken
    with pytest.raises(RuntimeError):
        c.upsert([("b", "y"), ("a", "changed")])
    with pytest.raises(ValueError):
        c.upsert([("d", "y"), ("d", "z")])
    assert c.snapshot()[0] == ["a"] and c.get("a").text == "x" and c.get("b") is None
    c.close()
    assert ItemCatalog(tmp_path / "c.db", embed, "v1").snapshot()[0] == ["a"]


def test_concurrent_writers_and_readers(tmp_path):
    c = ItemCatalog(tmp_path / "c.db", embed, "v1")
    errors = []

    def writer(w):
        try:
            for k in range(50):
                c.upsert([(f"w{w}-{k}", "x" * (k + 1))])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        for _ in range(200):
            ids, vecs = c.snapshot()
            assert len(ids) >= len(vecs)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [threading.Thread(target=reader)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(c) == 200
