"""ZESRec: planted-pattern learning (with the real MiniLM), loaders, save/load, API, protocol invariants.

Fast (CPU, well under a minute): a few dozen short texts and models with a handful of parameters.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zest.models.errors import InvalidInput, ModelLoadError, NotFound
from zest.models.rec import ZesRec, ZesRecConfig, load, save
from zest.models.rec.model import item_vectors
from zest.models.rec.text import TextEncoder
from zest.training.rec import (
    TrainConfig,
    load_interactions_csv,
    load_items_csv,
    load_movielens,
    movie_text,
    train_main,
)
from zest.training.rec.baselines import TextPopularity
from zest.training.rec.metrics import ranking_metrics
from zest.training.rec.trainer import fit

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
ML_DIR = REPO / "data" / "ml-latest-small"

# ------------------------------------------------------------------------------------------ synthetic world
# Four topics. Planted pattern: after a MUSIC item comes a COOKING item; after a SPORTS item a SPACE item.
# Music and cooking (or sports and space) share no vocabulary, so only a learned transition links them.
TOPICS = {
    "music": ["jazz album by the {} quartet", "live piano concert of {} songs", "guitar record from the {} band"],
    "cooking": ["recipe for {} chocolate cake", "how to bake {} bread at home", "soup recipe with {} vegetables"],
    "sports": ["football match against {} united", "tennis final in {} stadium", "basketball league game in {}"],
    "space": ["rocket launch to the {} moon", "telescope images of the {} galaxy", "astronaut mission to planet {}"],
}
WORDS_TRAIN = ["blue", "old", "summer", "northern", "golden", "quiet", "lucky", "royal"]
WORDS_NEW = ["crimson", "ancient", "winter"]  # held-out items: texts never seen in training
NEXT = {"music": "cooking", "sports": "space"}


def _items(words):
    texts, topic = [], []
    for t, templates in TOPICS.items():
        for tpl in templates:
            for w in words:
                texts.append(tpl.format(w))
                topic.append(t)
    return texts, np.array(topic)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


@pytest.fixture(scope="module")
def world(encoder):
    train_texts, train_topic = _items(WORDS_TRAIN)
    new_texts, new_topic = _items(WORDS_NEW)
    emb = encoder.encode(train_texts)
    new_emb = encoder.encode(new_texts)
    return train_texts, train_topic, emb, new_texts, new_topic, new_emb


def _sequences(topic, rng, n_users=120, length=10, shuffled=False):
    """Users alternate source -> target topic items; ``shuffled`` pairs each source with a random target topic."""
    by_topic = {t: np.flatnonzero(topic == t) for t in TOPICS}
    seqs = []
    for u in range(n_users):
        src = "music" if u % 2 == 0 else "sports"
        seq = []
        for _ in range(length // 2):
            tgt = NEXT[src] if not shuffled else rng.choice(["cooking", "space"])
            seq += [rng.choice(by_topic[src]), rng.choice(by_topic[tgt])]
        seqs.append(np.array(seq))
    return seqs


TINY = ZesRecConfig(hidden=32, dim=16, n_layers=1, n_heads=2, max_len=10, dropout=0.0)


def _train(emb, seqs, seed=0, epochs=25, **kw):
    """Pure next-item training by default (the planted pattern is a transition, so no popularity prior at
    the start: the bias has to be learned like everything else); kw overrides."""
    kw = {"set_weight": 0.0, "next_weight": 1.0, "n_negatives": 0, "ema": 0.0, "pop_init": False, **kw}
    cfg = TrainConfig(lr=5e-3, batch_size=32, seed=seed, progress=False, weight_decay=0.0, **kw)
    return fit(emb, emb, seqs, np.arange(len(emb)), TINY, cfg, val_fn=None, epochs=epochs).net


def _pairwise_win(rec, new_texts, new_topic, src, good, bad, rng):
    """Fraction of (random new-src history, good new item, bad new item) triples where good outscores bad."""
    items = rec.embed_items(new_texts)
    src_idx = np.flatnonzero(new_topic == src)
    g, b = np.flatnonzero(new_topic == good), np.flatnonzero(new_topic == bad)
    wins = []
    for _ in range(20):
        user = rec.user_vector(items[rng.choice(src_idx, size=3)])
        s = items @ user
        wins.append((s[g][:, None] > s[b][None, :]).mean())
    return float(np.mean(wins))


OBJECTIVES = {
    "next-item, full softmax": {},
    "default (next-item + held-out items, sampled negatives, EMA)": {
        "set_weight": 1.0, "next_weight": 0.5, "n_negatives": 32, "ema": 0.9},
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_learns_planted_transition_zero_shot_and_shuffled_control_does_not(world, encoder, objective):
    _, topic, emb, new_texts, new_topic, _ = world
    kw = OBJECTIVES[objective]
    rng = np.random.default_rng(0)
    rec = ZesRec(_train(emb, _sequences(topic, rng), **kw), encoder=encoder)
    ctrl = ZesRec(_train(emb, _sequences(topic, np.random.default_rng(0), shuffled=True), **kw), encoder=encoder)
    r = np.random.default_rng(1)
    learned = [_pairwise_win(rec, new_texts, new_topic, "music", "cooking", "space", r),
               _pairwise_win(rec, new_texts, new_topic, "sports", "space", "cooking", r)]
    control = [_pairwise_win(ctrl, new_texts, new_topic, "music", "cooking", "space", r),
               _pairwise_win(ctrl, new_texts, new_topic, "sports", "space", "cooking", r)]
    # on items it never saw: music history -> cooking above space, sports history -> space above cooking
    assert min(learned) > 0.9, learned
    # trained on shuffled pairs there is nothing to learn: no consistent preference in both directions
    assert min(control) < 0.75, control
    assert min(learned) - min(control) > 0.2


def test_content_bias_learns_popularity_from_text(world, encoder):
    """Targets are mostly cooking items: a new cooking item gets a higher bias than a new space item."""
    _, topic, emb, new_texts, new_topic, _ = world
    rng = np.random.default_rng(0)
    cook, other = np.flatnonzero(topic == "cooking"), np.flatnonzero(topic != "cooking")
    seqs = [np.array([rng.choice(cook) if rng.random() < 0.8 else rng.choice(other) for _ in range(10)]) for _ in range(80)]
    rec = ZesRec(_train(emb, seqs, epochs=15), encoder=encoder)  # learned by the loss alone (pop_init off)
    bias = rec.embed_items(new_texts)[:, -1]
    assert bias[new_topic == "cooking"].min() > bias[new_topic == "space"].max()


def test_pop_init_starts_the_content_bias_at_the_text_popularity_ridge(world):
    """Before any step the content bias is the ridge fit of log(1 + count) on the text (TextPopularity)."""
    _, topic, emb, _, _, _ = world
    rng = np.random.default_rng(1)
    seqs = [rng.choice(len(emb), size=8, p=np.where(topic == "music", 4.0, 1.0) / np.where(topic == "music", 4.0, 1.0).sum())
            for _ in range(60)]
    counts = np.bincount(np.concatenate(seqs), minlength=len(emb))
    net = _train(emb, seqs, epochs=0, pop_init=True)
    _, bias = item_vectors(net, emb)
    ridge = TextPopularity(alpha=1.0).fit(emb, counts).predict(emb)
    np.testing.assert_allclose(bias, ridge, atol=1e-4)
    assert np.corrcoef(bias, np.log1p(counts))[0, 1] > 0.5
    _, cold = item_vectors(_train(emb, seqs, epochs=0, pop_init=False), emb)
    np.testing.assert_allclose(cold, 0.0)  # without it the bias starts at zero


def test_api_shapes_score_and_errors(world, encoder):
    _, topic, emb, new_texts, _, new_emb = world
    rec = ZesRec(_train(emb, _sequences(topic, np.random.default_rng(0)), epochs=2), encoder=encoder)
    items = rec.embed_items(new_texts)
    assert items.shape == (len(new_texts), TINY.dim + 1) and items.dtype == np.float32
    np.testing.assert_allclose(items, rec.embed_text_embeddings(new_emb), atol=1e-5)
    user = rec.user_vector(items[:4])
    assert user.shape == (TINY.dim + 1,) and user[-1] == 1.0
    # score is a plain dot product: u . v + b
    np.testing.assert_allclose(items @ user, items[:, :-1] @ user[:-1] + items[:, -1], rtol=1e-5, atol=1e-5)
    # (h, dim) rows without the bias column give the same user vector
    np.testing.assert_allclose(rec.user_vector(items[:4, :-1]), user, atol=1e-6)
    np.testing.assert_allclose(rec.user_vector_from_texts(new_texts[:4]), user, atol=1e-5)
    batch = rec.user_vectors([items[:4], items[5:6]])
    np.testing.assert_allclose(batch[0], user, atol=1e-5)
    idx, scores = rec.recommend(user, items, k=5, exclude=[0, 1, 2, 3])
    assert len(idx) == 5 and not set(idx) & {0, 1, 2, 3} and np.all(np.diff(scores) <= 0)
    with pytest.raises(InvalidInput, match="empty"):
        rec.user_vector(np.zeros((0, rec.dim), np.float32))
    with pytest.raises(InvalidInput, match="shape"):
        rec.user_vector(np.zeros((3, 7), np.float32))
    with pytest.raises(InvalidInput, match="empty"):
        rec.user_vector_from_texts([])
    with pytest.raises(InvalidInput, match="empty"):
        rec.embed_items(["ok", "  "])
    with pytest.raises(InvalidInput, match="NaN"):
        rec.user_vector(np.full((2, rec.dim), np.nan, np.float32))


def test_save_load_roundtrip(tmp_path, world, encoder):
    _, topic, emb, new_texts, _, _ = world
    rec = ZesRec(_train(emb, _sequences(topic, np.random.default_rng(0)), epochs=2), encoder=encoder,
                 catalog_ids=[str(i) for i in range(len(new_texts))], catalog_texts=new_texts)
    rec.catalog_vectors = rec.embed_items(new_texts)
    save(rec, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format"] == "zest-zesrec" and cfg["model"]["dim"] == TINY.dim
    assert (tmp_path / "m" / "model.safetensors").is_file()
    back = load(tmp_path / "m", encoder=encoder)
    np.testing.assert_allclose(back.embed_items(new_texts), rec.embed_items(new_texts), atol=1e-6)
    h = rec.catalog_vectors[:3]
    np.testing.assert_allclose(back.user_vector(h), rec.user_vector(h), atol=1e-6)
    np.testing.assert_allclose(back.catalog_vectors, rec.catalog_vectors)
    assert back.catalog_ids == rec.catalog_ids
    with pytest.raises(ModelLoadError, match="not a ZESRec model directory"):
        load(tmp_path / "nothing")
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(ModelLoadError):
        load(tmp_path / "m")


# ------------------------------------------------------------------------------------------ loaders


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def test_items_csv_id_text_and_joined_columns(tmp_path):
    cat = load_items_csv(_write(tmp_path / "a.csv", 'id,text\n1,"Toy Story, a film"\n2,Heat\n'))
    assert cat.ids == ["1", "2"] and cat.texts == ["Toy Story, a film", "Heat"] and cat.index["2"] == 1
    cat = load_items_csv(_write(tmp_path / "b.csv", "item_id,title,genre,blurb\nx,Heat,Crime,\ny,Up,Animation,balloons\n"))
    assert cat.texts == ["Heat. genre: Crime", "Up. genre: Animation. blurb: balloons"]
    cat = load_items_csv(tmp_path / "b.csv", text_cols=["blurb", "title"])
    assert cat.texts[1] == "balloons. title: Up"


@pytest.mark.parametrize(
    "content, match",
    [
        ("name,text\n1,a\n", "no id column"),
        ("id\n1\n", "no text column"),
        ("id,text\n", "no items"),
        ("id,text\n1,a\n1,b\n", "duplicate item id '1'"),
        ("id,text\n1,\n", "empty text"),
        ("id,text\n,a\n", "empty item id"),
        ("id,text\n1,a,extra\n", "3 fields"),
        ("", "empty"),
    ],
)
def test_items_csv_rejects_bad_input(tmp_path, content, match):
    with pytest.raises(InvalidInput, match=match):
        load_items_csv(_write(tmp_path / "items.csv", content))


def test_items_csv_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_items_csv(tmp_path / "nope.csv")


@pytest.fixture
def catalog(tmp_path):
    return load_items_csv(_write(tmp_path / "items.csv", "id,text\na,apple\nb,banana\nc,cherry\n"))


def test_interactions_csv_parses_sorts_and_filters(tmp_path, catalog):
    p = _write(tmp_path / "i.csv", "user,item,timestamp,rating\nu1,b,20,5\nu1,a,10,4\nu2,c,2024-01-02T00:00:00Z,1\nu2,a,5,3\n")
    inter = load_interactions_csv(p, catalog)
    assert len(inter) == 4 and inter.user_ids == ["u1", "u2"]
    seqs = inter.sequences()
    assert seqs[0].tolist() == [0, 1]  # a (t=10) before b (t=20)
    assert seqs[1].tolist() == [0, 2]  # a (t=5) before c (2024)
    assert len(load_interactions_csv(p, catalog, min_rating=3)) == 3


@pytest.mark.parametrize(
    "content, exc, match",
    [
        ("user,item\nu,a\n", InvalidInput, "lacks column.*timestamp"),
        ("user,timestamp\nu,1\n", InvalidInput, "lacks column.*item"),
        ("item,timestamp\na,1\n", InvalidInput, "lacks column.*user"),
        ("user,item,timestamp\nu,zzz,1\n", NotFound, "item id 'zzz' is not in the items file"),
        ("user,item,timestamp\nu,a,yesterday\n", InvalidInput, "neither a number nor an ISO-8601"),
        ("user,item,timestamp\nu,a,\n", InvalidInput, "empty timestamp"),
        ("user,item,timestamp\n,a,1\n", InvalidInput, "empty user or item"),
        ("user,item,timestamp\n", InvalidInput, "no interactions"),
    ],
)
def test_interactions_csv_rejects_bad_input(tmp_path, catalog, content, exc, match):
    with pytest.raises(exc, match=match):
        load_interactions_csv(_write(tmp_path / "i.csv", content), catalog)


def test_interactions_min_rating_needs_rating_column(tmp_path, catalog):
    with pytest.raises(InvalidInput, match="no rating column"):
        load_interactions_csv(_write(tmp_path / "i.csv", "user,item,timestamp\nu,a,1\n"), catalog, min_rating=4)


def test_fit_rejects_empty_histories():
    emb = np.eye(4, 384, dtype=np.float32)
    with pytest.raises(InvalidInput, match="two or more"):
        fit(emb, emb, [np.array([0]), np.array([], np.int64)], np.arange(4), TINY, TrainConfig(progress=False))


@pytest.mark.skipif(not (ML_DIR / "ratings.csv").is_file(), reason="vendored MovieLens missing")
def test_movielens_loader_builds_text_from_title_genres_tags():
    ml = load_movielens(ML_DIR)
    assert len(ml.catalog) == 9742 and len(ml.interactions) == 100836 and ml.interactions.n_users == 610
    toy = ml.catalog.texts[ml.catalog.index["1"]]
    assert toy.startswith("Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: ")
    assert "pixar" in toy.lower()
    assert "Tags:" not in ml.texts(with_tags=False)[ml.catalog.index["1"]]
    assert movie_text("X (2000)", ["(no genres listed)"], ["a", "A", "b"]) == "X (2000). Tags: a, b."


# ------------------------------------------------------------------------------------------ metrics & protocol


def test_ranking_metrics_known_values():
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    m = ranking_metrics(scores, [np.array([0, 2]), np.array([0])], ks=(2,), exclude=[np.array([]), np.array([3])])
    # user 0: top2 = [0, 1], one hit of min(2, 2) -> 0.5; user 1: item 3 excluded, top2 = [2, 1] -> 0
    np.testing.assert_allclose(m["recall@2"], [0.5, 0.0])
    np.testing.assert_allclose(m["ndcg@2"], [1 / (1 + 1 / np.log2(3)), 0.0])


class _HashEncoder:
    """Deterministic fake text encoder for protocol-invariant tests (not for learning)."""

    def encode(self, texts):
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(384) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.skipif(not (ML_DIR / "ratings.csv").is_file(), reason="vendored MovieLens missing")
def test_cold_protocol_never_trains_on_cold_or_val_items_and_drops_their_tags():
    from zest.training.rec.protocols import cold_split, movielens_eval_data, warm_split

    ml = load_movielens(ML_DIR)
    data = movielens_eval_data(ml)
    s = cold_split(data, _HashEncoder(), seed=0)
    cold = s.test.candidates
    val = s.val.candidates
    assert len(cold) == round(0.2 * len(ml.catalog))
    assert not set(cold) & set(val) and not set(cold) & set(s.catalogue) and not set(val) & set(s.catalogue)
    assert set(np.unique(s.train.item)) <= set(s.catalogue)  # no cold/val interaction is trained on
    for h in s.test.histories:  # histories only hold warm items
        assert not set(h) & set(cold)
    no_tags = _HashEncoder().encode(data.texts_without_tags)
    np.testing.assert_allclose(s.target_emb[cold], no_tags[cold])  # cold items described without user tags
    assert not any(t.startswith("t:") for i in cold for t in s.tokens[i])
    # warm protocol: a user's tag on their own held-out item is removed from that item's text
    w = warm_split(data, _HashEncoder(), seed=0)
    assert len(w.test.users) > 500 and all(len(r) >= 1 for r in w.test.relevant)
    for ex, rel in zip(w.test.exclude, w.test.relevant):
        assert not set(ex) & set(rel)


def test_train_main_end_to_end(tmp_path, capsys):
    texts, _ = _items(WORDS_TRAIN[:3])
    lines = ["id,text"] + [f"i{j},{t}" for j, t in enumerate(texts)]
    items = _write(tmp_path / "items.csv", "\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    rows = ["user,item,timestamp"]
    for u in range(40):
        for t in range(8):
            rows.append(f"u{u},i{rng.integers(len(texts))},{t}")
    inter = _write(tmp_path / "inter.csv", "\n".join(rows) + "\n")
    out = tmp_path / "model"
    rc = train_main(["--items", str(items), "--interactions", str(inter), "--out", str(out), "--seed", "1",
                     "--max-epochs", "2", "--no-progress", "--cache-dir", ""])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == len(texts) and Path(report["out"]) == out.resolve()
    rec = load(out)
    assert rec.catalog_ids[0] == "i0" and rec.catalog_vectors.shape == (len(texts), rec.dim)
    # --no-catalog: the two files models/rec/checkpoint/ ships, the same weights
    bare = tmp_path / "bare"
    assert train_main(["--items", str(items), "--interactions", str(inter), "--out", str(bare), "--seed", "1",
                       "--max-epochs", "2", "--no-progress", "--cache-dir", "", "--no-catalog"]) == 0
    capsys.readouterr()
    assert sorted(f.name for f in bare.iterdir()) == ["config.json", "model.safetensors"]
    again = load(bare)
    assert again.catalog_ids is None
    for k, v in rec.net.state_dict().items():  # the same command, the same seed: the same weights
        np.testing.assert_array_equal(v, again.net.state_dict()[k], err_msg=k)
    # a bad file gives a clear error and exit code 2, not a traceback
    bad = _write(tmp_path / "bad.csv", "user,item,timestamp\nu,nope,1\n")
    assert train_main(["--items", str(items), "--interactions", str(bad), "--out", str(out), "--cache-dir", ""]) == 2
    assert "not in the items file" in capsys.readouterr().err


def test_benchmark_summary_reports_mean_wins_and_single_seed_wins():
    """The recorded table says whether ZESRec beats every baseline on the mean, and on how many seeds."""
    from zest.training.rec.report import (
        per_seed_wins,
        summarize,
        to_markdown,
        zesrec_beats_all,
    )

    def seed(z, b):
        row = lambda v: {"test": {k: v for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")}, "params": {}}
        return {"seed": 0, "split": {}, "seconds": 1.0, "methods": {"ZESRec": row(z), "blend": row(b)}}

    per_seed = [seed(0.30, 0.10), seed(0.10, 0.12), seed(0.11, 0.12)]  # mean 0.170 vs 0.113, wins 1 of 3
    summ = summarize(per_seed)
    assert summ["ZESRec"]["ndcg@20"]["mean"] == pytest.approx(0.17)
    assert zesrec_beats_all(summ) == {"recall@20": True, "ndcg@20": True}
    assert per_seed_wins(per_seed, "recall@20") == 1
    results = {"dataset": "d", "seeds": [0, 1, 2], "val_metric": "ndcg@20", "seconds": 1.0, "environment": {},
               "zesrec_config": {}, "train_config": {}, "protocols": {"cold": {"per_seed": per_seed, "summary": summ}}}
    md = to_markdown(results)
    assert "recall@20: yes" in md and "recall@20 in 1 of 3" in md
    per_seed[0]["methods"]["ZESRec"]["test"]["recall@20"] = 0.05
    assert not zesrec_beats_all(summarize(per_seed))["recall@20"]


def test_text_memo_is_bounded_and_keeps_answers_exact(encoder):
    """A server's encoder forgets the least recently used texts beyond its bound, and recomputes them."""
    bounded = TextEncoder(max_cached=3, embed=encoder.minilm.encode)  # the same MiniLM, loaded once
    texts = [f"a film about {w}" for w in ("dogs", "cats", "ships", "trains", "rain")]
    first = bounded.encode(texts)
    assert len(bounded) == 3
    np.testing.assert_allclose(first, encoder.encode(texts), atol=1e-6)
    again = bounded.encode(texts[:2])  # evicted, re-encoded: same vectors
    np.testing.assert_allclose(again, first[:2], atol=1e-6)
    assert len(bounded) == 3
    with pytest.raises(ValueError):
        TextEncoder(max_cached=0)


def test_the_text_cache_sends_only_unseen_texts_to_its_embed():
    """A served recommender's `embed` is a call to the encoder service (service/item_texts.py): a text in the cache
    does not cross again, a repeat in one call crosses once, and a bad text is refused before anything crosses."""
    sent: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        sent.append(list(texts))
        return np.stack([np.full(384, len(t), np.float32) for t in texts])

    cached = TextEncoder(max_cached=2, embed=embed)
    out = cached.encode(["ab", "abc", "ab"])
    assert sent == [["ab", "abc"]] and out[:, 0].tolist() == [2, 3, 2]
    cached.encode(["abc"])
    cached.encode(["abcd"])  # evicts "ab", the least recently used
    cached.encode(["ab", "abcd"])
    assert sent == [["ab", "abc"], ["abcd"], ["ab"]]
    with pytest.raises(InvalidInput):
        cached.encode(["ok", " "])
    assert len(sent) == 3
    wrong = TextEncoder(embed=lambda texts: np.zeros((len(texts), 7), np.float32))
    with pytest.raises(ModelLoadError, match="shape"):
        wrong.encode(["a"])


def test_a_model_keeps_the_text_encoder_it_is_given(rec_model_dir):
    """An empty TextEncoder has len 0: `load` once took it for none and put a default one in its place, so a
    server lost its ZEST_TEXT_CACHE_SIZE bound and (served) embedded with MiniLM in its own process."""
    given = TextEncoder(max_cached=5, embed=lambda texts: np.zeros((len(texts), 384), np.float32))
    assert load(rec_model_dir, encoder=given).encoder is given
