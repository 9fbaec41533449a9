"""Evaluation data views and the cold-item / warm-item protocols: how interactions become train,
validation and test tasks (each protocol: `cold_split`, `warm_split`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...models.errors import InvalidInput
from ...models.rec.text import TextEncoder
from .baselines import text_tokens
from .data import Interactions, MovieLens
from .metrics import ranking_metrics

log = logging.getLogger(__name__)

KS = (10, 20)
VAL_METRIC = "ndcg@20"
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")



# ---------------------------------------------------------------------------------------------- data views


@dataclass
class EvalData:
    """What a protocol needs from a dataset, independent of its on-disk format."""

    interactions: Interactions
    n_items: int
    texts_with_tags: Callable[[set | None], list[str]]  # exclude_pairs -> texts (tags = user-generated text)
    texts_without_tags: list[str]
    tokens: Callable[[set | None, np.ndarray], list[list[str]]]  # (exclude_pairs, has_tags mask) -> tokens
    name: str = "dataset"


def movielens_eval_data(ml: MovieLens) -> EvalData:
    decade = [f"y:{(y // 10) * 10}s" if y else "y:unknown" for y in ml.years]
    genre_tokens = [["g:" + g.lower() for g in gs if g != "(no genres listed)"] for gs in ml.genres]

    def tokens(exclude_pairs, has_tags):
        tag_sets = ml.item_tag_tokens(exclude_pairs)
        out = []
        for i in range(len(ml.titles)):
            t = genre_tokens[i] + [decade[i]]
            if has_tags[i]:
                t += sorted({"t:" + w for tag in tag_sets[i] for w in text_tokens(tag)})
            out.append(t)
        return out

    return EvalData(
        interactions=ml.interactions,
        n_items=len(ml.catalog),
        texts_with_tags=lambda ex: ml.texts(True, ex),
        texts_without_tags=ml.texts(False),
        tokens=tokens,
        name="ml-latest-small",
    )


def generic_eval_data(catalog, interactions: Interactions, name: str = "custom") -> EvalData:
    toks = [text_tokens(t) for t in catalog.texts]
    return EvalData(
        interactions=interactions,
        n_items=len(catalog),
        texts_with_tags=lambda ex: list(catalog.texts),
        texts_without_tags=list(catalog.texts),
        tokens=lambda ex, has: toks,
        name=name,
    )


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class Task:
    users: np.ndarray
    histories: list[np.ndarray]  # item indices, chronological
    candidates: np.ndarray  # item indices
    relevant: list[np.ndarray]  # positions into candidates
    exclude: list[np.ndarray] | None = None  # positions into candidates

    def metrics(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        return ranking_metrics(scores, self.relevant, KS, self.exclude)

    def mean(self, scores: np.ndarray) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in self.metrics(scores).items()}

    def restrict(self, keep: np.ndarray) -> TaskView:
        """The same task ranked among only the candidates whose item is in ``keep`` (a mask over items);
        users left without a relevant candidate drop out."""
        cols = np.flatnonzero(np.asarray(keep, bool)[self.candidates])
        new_pos = np.full(len(self.candidates), -1, np.int64)
        new_pos[cols] = np.arange(len(cols))
        rows, relevant, exclude = [], [], []
        for r, rel in enumerate(self.relevant):
            rel2 = new_pos[rel]
            rel2 = rel2[rel2 >= 0]
            if len(rel2):
                rows.append(r)
                relevant.append(rel2)
                if self.exclude is not None:
                    ex = new_pos[self.exclude[r]]
                    exclude.append(ex[ex >= 0])
        if not rows:
            raise InvalidInput("no user has a relevant item among the kept candidates")
        task = Task(self.users[rows], [self.histories[r] for r in rows], self.candidates[cols], relevant,
                    exclude if self.exclude is not None else None)
        return TaskView(np.asarray(rows), cols, task)


@dataclass
class TaskView:
    """A sub-task of a task: its users ``rows`` and candidate columns ``cols`` (score matrices are sliced)."""

    rows: np.ndarray
    cols: np.ndarray
    task: Task

    def mean(self, scores: np.ndarray) -> dict[str, float]:
        return self.task.mean(np.asarray(scores)[np.ix_(self.rows, self.cols)])


def make_task(hist: dict[int, np.ndarray], targets: dict[int, np.ndarray], candidates: np.ndarray,
              n_items: int, exclude_history: bool) -> Task:
    cmap = np.full(n_items, -1, np.int64)
    cmap[candidates] = np.arange(len(candidates))
    users, histories, relevant, exclude = [], [], [], []
    for u in sorted(targets):
        h = hist.get(u)
        if h is None or len(h) == 0:
            continue
        rel = cmap[np.asarray(targets[u])]
        rel = np.unique(rel[rel >= 0])
        if exclude_history:
            ex = cmap[h]
            ex = np.unique(ex[ex >= 0])
            rel = np.setdiff1d(rel, ex)
            exclude.append(ex)
        if len(rel) == 0:
            if exclude_history:
                exclude.pop()
            continue
        users.append(u)
        histories.append(h)
        relevant.append(rel)
    if not users:
        raise InvalidInput("no evaluation user left (every user lacks a history or a relevant candidate)")
    return Task(np.asarray(users), histories, candidates, relevant, exclude if exclude_history else None)


@dataclass
class Split:
    protocol: str
    seed: int
    input_emb: np.ndarray  # text embeddings for history items
    target_emb: np.ndarray  # text embeddings for targets / candidates
    tokens: list[list[str]]  # LightFM item features
    train: Interactions
    catalogue: np.ndarray  # items known at training time (negatives)
    val: Task
    test: Task
    info: dict = field(default_factory=dict)
    known_counts: np.ndarray | None = None  # per-item counts of every interaction known at test time
    views: dict[str, TaskView] = field(default_factory=dict)  # extra test columns, e.g. "strict" candidates

    def test_metrics(self, scores: np.ndarray) -> dict[str, float]:
        """Test metrics of a (test users, test candidates) score matrix, plus ``"<view>:<metric>"`` per view."""
        out = self.test.mean(scores)
        for name, view in self.views.items():
            out.update({f"{name}:{k}": v for k, v in view.mean(scores).items()})
        return out

    @property
    def train_seqs(self) -> list[np.ndarray]:
        return list(self.train.sequences().values())


def user_targets(inter: Interactions) -> dict[int, np.ndarray]:
    out: dict[int, list] = {}
    for u, i in zip(inter.user.tolist(), inter.item.tolist()):
        out.setdefault(u, []).append(i)
    return {u: np.asarray(v) for u, v in out.items()}


def cold_split(data: EvalData, encoder: TextEncoder, seed: int, cold_frac: float = 0.2, val_frac: float = 0.2,
               cold_item_tags: str = "drop") -> Split:
    """The cold-item protocol (the one ZESRec is for), per seed:

    1. Items (the whole catalogue, including items nobody interacted with) are shuffled with the seed and split
       into **cold** (20 %) and **warm** (80 %); 20 % of the warm items (16 % of all, about as many as the
       cold items, so validation ranks a candidate set of similar size) are further held out as
       **validation-cold** items, the rest (64 %) are the **training catalogue**.
    2. Training sees only interactions with training-catalogue items. No interaction with a cold or
       validation item is ever used to train any model (ZESRec, LightFM, the popularity ridge); cold items
       are not even negatives.
    3. Cold and validation items are described *without user-generated tags* (MovieLens ``tags.csv``): a
       brand-new item has no tags yet, and in ml-latest-small tags are themselves interaction traces (92 % of
       distinct (user, movie) tag pairs come from a user who also rated the movie; tagged movies have ~5x the ratings of
       untagged ones), so keeping them would leak the held-out interactions. Warm items keep their tags.
       (``cold_item_tags="keep"`` reproduces the leaky variant for reference.)
    4. Validation task: every user with >= 1 interaction with a validation item; history = the user's
       training interactions (chronological); candidates = all validation items; relevant = the user's
       validation items. All hyper-parameters (ZESRec early stopping, ridge alpha, blend weight, content-KNN
       history variant, LightFM epochs / identity features) are chosen on this task only.
    5. Test task: every user with >= 1 interaction with a cold item and >= 1 warm interaction; history = the
       user's warm (training + validation) interactions; candidates = **all cold items**; relevant = the
       user's cold items. Models are not re-fitted on validation items.
    """
    n = data.n_items
    rng = np.random.default_rng(10_000 + seed)
    perm = rng.permutation(n)
    n_cold = round(cold_frac * n)
    cold, warm = perm[:n_cold], perm[n_cold:]
    n_val = round(val_frac * len(warm))
    val_items, train_items = warm[:n_val], warm[n_val:]
    role = np.zeros(n, np.int8)
    role[val_items] = 1
    role[cold] = 2
    inter = data.interactions
    r = role[inter.item]
    train = inter.subset(r == 0)
    warm_inter = inter.subset(r <= 1)
    texts_tagged = data.texts_with_tags(None)
    input_emb = encoder.encode(texts_tagged)
    if cold_item_tags == "drop":
        target_emb = encoder.encode(data.texts_without_tags)
        has_tags = role == 0
    elif cold_item_tags == "keep":
        target_emb = input_emb
        has_tags = np.ones(n, bool)
    else:
        raise InvalidInput(f"cold_item_tags must be 'drop' or 'keep', not {cold_item_tags!r}")
    tokens = data.tokens(None, has_tags)
    train_seqs, warm_seqs = train.sequences(), warm_inter.sequences()
    val = make_task(train_seqs, user_targets(inter.subset(r == 1)), np.sort(val_items), n, exclude_history=False)
    test = make_task(warm_seqs, user_targets(inter.subset(r == 2)), np.sort(cold), n, exclude_history=False)
    info = {
        "items": {"train": len(train_items), "val": int(n_val), "cold": int(n_cold)},
        "interactions": {"train": int((r == 0).sum()), "val": int((r == 1).sum()), "cold": int((r == 2).sum())},
        "users": {"train": len(train_seqs), "val": len(val.users), "test": len(test.users)},
        "cold_item_tags": cold_item_tags,
    }
    return Split("cold", seed, input_emb, target_emb, tokens, train, np.sort(train_items), val, test, info)


def warm_split(data: EvalData, encoder: TextEncoder, seed: int, n_test: int = 5, n_val: int = 5, min_train: int = 3) -> Split:
    """The warm-item protocol, per seed: each user's interactions sorted by time; the last 5 are test, the 5 before
    are validation, the rest train (users with < 13 interactions only train). Candidates = the whole
    catalogue minus the user's known items; tags a user applied to one of their own held-out items are
    removed from the item text (and from LightFM's features) so the held-out interaction cannot leak through
    its tag."""
    inter = data.interactions
    n = data.n_items
    # chronological order per user (ties: file order); seed only matters for the models
    order = np.lexsort((np.arange(len(inter)), inter.time, inter.user))
    users = inter.user[order]
    role = np.zeros(len(inter), np.int8)  # 0 train, 1 val, 2 test (in `order` coordinates)
    cuts = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(users)]])
    for a, b in zip(starts, ends):
        if b - a >= n_test + n_val + min_train:
            role[b - n_test : b] = 2
            role[b - n_test - n_val : b - n_test] = 1
    role_orig = np.empty_like(role)
    role_orig[order] = role
    train = inter.subset(role_orig == 0)
    known_val = inter.subset(role_orig <= 1)
    held = inter.subset(role_orig >= 1)
    exclude_pairs = {(inter.user_ids[u], int(i)) for u, i in zip(held.user.tolist(), held.item.tolist())}
    emb = encoder.encode(data.texts_with_tags(exclude_pairs))
    tokens = data.tokens(exclude_pairs, np.ones(n, bool))
    all_items = np.arange(n)
    train_seqs, known_seqs = train.sequences(), known_val.sequences()
    val = make_task(train_seqs, user_targets(inter.subset(role_orig == 1)), all_items, n, exclude_history=True)
    test = make_task(known_seqs, user_targets(inter.subset(role_orig == 2)), all_items, n, exclude_history=True)
    info = {
        "interactions": {"train": int((role == 0).sum()), "val": int((role == 1).sum()), "test": int((role == 2).sum())},
        "users": {"train": len(train_seqs), "val": len(val.users), "test": len(test.users)},
        "items": {"candidates": int(n)},
    }
    return Split("warm", seed, emb, emb, tokens, train, all_items, val, test, info,
                 known_counts=np.bincount(known_val.item, minlength=n).astype(np.float64))
