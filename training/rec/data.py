"""Loaders for the recommender: a generic items/interactions CSV pair and MovieLens ``ml-latest-small``.

Everything here is plain ``csv`` + numpy (no pandas). Bad input raises :class:`models.errors.InvalidInput`
(or :class:`models.errors.NotFound` for ids that do not exist) with a message naming the file, the line and
the problem, so the CLI and the service can show it as is.

Formats
-------
``items.csv``
    A header row with an id column (``id``, ``item``, ``item_id``; or ``movieId`` for MovieLens files) and
    either a ``text`` column or one or more other columns, which are joined into the item text as
    ``"<value1>. <col2>: <value2>. ..."`` (the first text column is written without its name, usually a
    title). Ids must be unique and non-empty; an item whose joined text is empty is rejected.
``interactions.csv``
    A header row with ``user`` (or ``user_id``/``userId``), ``item`` (or ``item_id``/``movieId``) and
    ``timestamp`` (number, or ISO-8601 date/time) columns; an optional ``rating`` column is used with
    ``min_rating``. Every item id must exist in the items file; duplicate (user, item) pairs are kept
    (re-consumption) unless ``dedupe=True``.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ...models.errors import InvalidInput, NotFound

ID_COLUMNS = ("id", "item", "item_id", "movieId")
USER_COLUMNS = ("user", "user_id", "userId")
ITEM_COLUMNS = ("item", "item_id", "movieId")
TIME_COLUMNS = ("timestamp", "time", "ts")
RATING_COLUMNS = ("rating", "weight")


@dataclass
class ItemTexts:
    """Items in a fixed order: ``ids[i]`` has text ``texts[i]``; ``index`` maps id -> position."""

    ids: list[str]
    texts: list[str]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise InvalidInput(f"{len(self.ids)} item ids but {len(self.texts)} texts")
        if not self.index:
            self.index = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise InvalidInput("item ids are not unique")

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, item_ids: Iterable[str]) -> np.ndarray:
        """Positions of ``item_ids``; raises NotFound naming the first unknown id."""
        out = []
        for item_id in item_ids:
            pos = self.index.get(str(item_id))
            if pos is None:
                raise NotFound(f"unknown item id {item_id!r}")
            out.append(pos)
        return np.asarray(out, dtype=np.int64)


@dataclass
class Interactions:
    """Implicit interactions as parallel arrays of user index, item index (into an ItemTexts) and time."""

    user: np.ndarray  # int64, index into user_ids
    item: np.ndarray  # int64, index into the catalog
    time: np.ndarray  # float64, seconds (any monotone unit works)
    user_ids: list[str]

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def subset(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.user[mask], self.item[mask], self.time[mask], self.user_ids)

    def sequences(self) -> dict[int, np.ndarray]:
        """user index -> that user's item indices in chronological order (ties keep file order)."""
        order = np.lexsort((np.arange(len(self)), self.time, self.user))
        users, items = self.user[order], self.item[order]
        out: dict[int, np.ndarray] = {}
        if len(users) == 0:
            return out
        cuts = np.flatnonzero(np.diff(users)) + 1
        for chunk_u, chunk_i in zip(np.split(users, cuts), np.split(items, cuts)):
            out[int(chunk_u[0])] = chunk_i.copy()
        return out


# ----------------------------------------------------------------------------------------------------------
# CSV helpers


def _open_csv(path: str | os.PathLike, what: str) -> tuple[list[str], list[list[str]]]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{what} file {str(p)!r} does not exist")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InvalidInput(f"{what} file {str(p)!r} is empty (no header row)")
            header = [h.strip().lstrip("\ufeff") for h in header]
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} file {str(p)!r} is not UTF-8: {exc}") from None
    except csv.Error as exc:
        raise InvalidInput(f"{what} file {str(p)!r} is not valid CSV: {exc}") from None
    if len(set(header)) != len(header):
        raise InvalidInput(f"{what} file {str(p)!r} has duplicate column names: {header}")
    return header, rows


def _pick(header: Sequence[str], candidates: Sequence[str], explicit: str | None, what: str, path) -> int | None:
    if explicit is not None:
        if explicit not in header:
            raise InvalidInput(f"{what} column {explicit!r} not in {str(path)!r} (columns: {', '.join(header)})")
        return header.index(explicit)
    for name in candidates:
        if name in header:
            return header.index(name)
    return None


def _parse_time(value: str, path, line: int) -> float:
    v = value.strip()
    if not v:
        raise InvalidInput(f"{str(path)!r} line {line}: empty timestamp")
    try:
        t = float(v)
    except ValueError:
        try:
            t = datetime.fromisoformat(v).timestamp()
        except ValueError:
            raise InvalidInput(
                f"{str(path)!r} line {line}: timestamp {v!r} is neither a number nor an ISO-8601 date"
            ) from None
    if not math.isfinite(t):
        raise InvalidInput(f"{str(path)!r} line {line}: timestamp {v!r} is not finite")
    return t


# ----------------------------------------------------------------------------------------------------------
# generic loaders


def load_items_csv(
    path: str | os.PathLike,
    id_col: str | None = None,
    text_cols: Sequence[str] | None = None,
) -> ItemTexts:
    """Read ``items.csv``: an id column plus a ``text`` column or several text columns (joined)."""
    header, rows = _open_csv(path, "items")
    id_idx = _pick(header, ID_COLUMNS, id_col, "id", path)
    if id_idx is None:
        raise InvalidInput(
            f"items file {str(path)!r} has no id column (expected one of {', '.join(ID_COLUMNS)}; "
            f"columns: {', '.join(header)})"
        )
    if text_cols:
        missing = [c for c in text_cols if c not in header]
        if missing:
            raise InvalidInput(f"items file {str(path)!r} lacks text columns {missing} (columns: {', '.join(header)})")
        text_idx = [header.index(c) for c in text_cols]
    elif "text" in header:
        text_idx = [header.index("text")]
    else:
        text_idx = [i for i in range(len(header)) if i != id_idx]
    if not text_idx:
        raise InvalidInput(f"items file {str(path)!r} has no text column besides the id column {header[id_idx]!r}")
    if not rows:
        raise InvalidInput(f"items file {str(path)!r} has a header but no items")
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        if len(row) != len(header):
            raise InvalidInput(f"items file {str(path)!r} line {n}: {len(row)} fields, header has {len(header)}")
        item_id = row[id_idx].strip()
        if not item_id:
            raise InvalidInput(f"items file {str(path)!r} line {n}: empty item id")
        if item_id in seen:
            raise InvalidInput(f"items file {str(path)!r} line {n}: duplicate item id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = n
        parts = []
        for j, col in enumerate(text_idx):
            value = " ".join(row[col].split())
            if value:
                parts.append(value if (j == 0 or len(text_idx) == 1) else f"{header[col]}: {value}")
        text = ". ".join(parts)
        if not text:
            raise InvalidInput(f"items file {str(path)!r} line {n}: item {item_id!r} has empty text")
        ids.append(item_id)
        texts.append(text)
    if not ids:
        raise InvalidInput(f"items file {str(path)!r} has no items")
    return ItemTexts(ids, texts)


def load_interactions_csv(
    path: str | os.PathLike,
    catalog: ItemTexts,
    min_rating: float | None = None,
    dedupe: bool = False,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
) -> Interactions:
    """Read ``interactions.csv`` (user, item, timestamp[, rating]) against ``catalog``.

    Raises NotFound for an item id missing from the catalog and InvalidInput for missing columns, empty
    fields, bad timestamps/ratings, or a file with no interactions left (after ``min_rating``).
    """
    header, rows = _open_csv(path, "interactions")
    u_idx = _pick(header, USER_COLUMNS, user_col, "user", path)
    i_idx = _pick(header, ITEM_COLUMNS, item_col, "item", path)
    t_idx = _pick(header, TIME_COLUMNS, time_col, "timestamp", path)
    missing = [name for name, idx in (("user", u_idx), ("item", i_idx), ("timestamp", t_idx)) if idx is None]
    if missing:
        raise InvalidInput(
            f"interactions file {str(path)!r} lacks column(s) {', '.join(missing)} "
            f"(need user, item, timestamp; columns: {', '.join(header)})"
        )
    assert u_idx is not None and i_idx is not None and t_idx is not None  # checked just above
    r_idx = _pick(header, RATING_COLUMNS, None, "rating", path)
    if min_rating is not None and r_idx is None:
        raise InvalidInput(f"min_rating given but interactions file {str(path)!r} has no rating column")
    user_index: dict[str, int] = {}
    users, items, times = [], [], []
    seen_pairs: set[tuple[int, int]] = set()
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InvalidInput(f"interactions file {str(path)!r} line {n}: {len(row)} fields, header has {len(header)}")
        user, item = row[u_idx].strip(), row[i_idx].strip()
        if not user or not item:
            raise InvalidInput(f"interactions file {str(path)!r} line {n}: empty user or item id")
        pos = catalog.index.get(item)
        if pos is None:
            raise NotFound(f"interactions file {str(path)!r} line {n}: item id {item!r} is not in the items file")
        t = _parse_time(row[t_idx], path, n)
        if min_rating is not None and r_idx is not None:  # r_idx is None only without min_rating (checked above)
            try:
                rating = float(row[r_idx])
            except ValueError:
                raise InvalidInput(f"interactions file {str(path)!r} line {n}: rating {row[r_idx]!r} is not a number") from None
            if rating < min_rating:
                continue
        u = user_index.setdefault(user, len(user_index))
        if dedupe:
            if (u, pos) in seen_pairs:
                continue
            seen_pairs.add((u, pos))
        users.append(u)
        items.append(pos)
        times.append(t)
    if not users:
        raise InvalidInput(f"interactions file {str(path)!r} has no interactions" + (f" with rating >= {min_rating}" if min_rating is not None else ""))
    return Interactions(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.asarray(times, dtype=np.float64),
        list(user_index),
    )


# ----------------------------------------------------------------------------------------------------------
# MovieLens ml-latest-small

_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class MovieLens:
    """ml-latest-small, parsed. ``catalog.texts`` is title + genres + tags (all tags); use :func:`movie_text`
    / :meth:`texts` to rebuild texts without tags or without some (user, item) tag applications."""

    catalog: ItemTexts
    interactions: Interactions
    titles: list[str]
    genres: list[list[str]]
    years: list[int | None]
    tags: list[tuple[int, int, str, float]]  # (user index in ratings' user_ids or -1, item position, tag, time)
    tag_user_ids: list[str]  # raw user id of each tag application

    def texts(self, with_tags: bool = True, exclude_pairs: set[tuple[str, int]] | None = None) -> list[str]:
        """Item texts; ``exclude_pairs`` drops tags applied by raw user id to item position."""
        per_item: list[list[str]] = [[] for _ in self.titles]
        if with_tags:
            for (_, item, tag, _), raw_user in zip(self.tags, self.tag_user_ids):
                if exclude_pairs and (raw_user, item) in exclude_pairs:
                    continue
                per_item[item].append(tag)
        return [movie_text(t, g, tg) for t, g, tg in zip(self.titles, self.genres, per_item)]

    def without_tags(self) -> MovieLens:
        """The same data with no user tags: item text is title (year) + genres, as for a catalogue without tags."""
        ml = MovieLens(ItemTexts(list(self.catalog.ids), [""] * len(self.titles)), self.interactions, self.titles,
                       self.genres, self.years, [], [])
        ml.catalog.texts = ml.texts(with_tags=False)
        return ml

    def item_tag_tokens(self, exclude_pairs: set[tuple[str, int]] | None = None) -> list[set[str]]:
        out: list[set[str]] = [set() for _ in self.titles]
        for (_, item, tag, _), raw_user in zip(self.tags, self.tag_user_ids):
            if exclude_pairs and (raw_user, item) in exclude_pairs:
                continue
            out[item].add(tag.strip().lower())
        return out


def movie_text(title: str, genres: Sequence[str], tags: Sequence[str] = (), max_tags: int = 20) -> str:
    """``"Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun."`` (tags deduplicated
    case-insensitively, most frequent first, at most ``max_tags``)."""
    parts = [title.strip()]
    g = [x for x in genres if x and x != "(no genres listed)"]
    if g:
        parts.append("Genres: " + ", ".join(g))
    if tags:
        counts = Counter(t.strip().lower() for t in tags if t.strip())
        first: dict[str, str] = {}
        for t in tags:
            first.setdefault(t.strip().lower(), t.strip())
        ordered = sorted(counts, key=lambda k: (-counts[k], k))[:max_tags]
        if ordered:
            parts.append("Tags: " + ", ".join(first[k] for k in ordered))
    return ". ".join(parts) + "."


def load_movielens(directory: str | os.PathLike, min_rating: float | None = None) -> MovieLens:
    """Parse ``movies.csv``, ``ratings.csv`` and ``tags.csv`` from an ml-latest-small directory.

    Every rating (>= ``min_rating`` if given) is one implicit interaction. Item text is
    :func:`movie_text` of title, genres and every tag applied to the movie.
    """
    d = Path(directory)
    for name in ("movies.csv", "ratings.csv"):
        if not (d / name).is_file():
            raise InvalidInput(f"{str(d)!r} is not a MovieLens directory: {name} is missing")
    header, rows = _open_csv(d / "movies.csv", "movies")
    need = ["movieId", "title", "genres"]
    if any(c not in header for c in need):
        raise InvalidInput(f"movies.csv lacks columns {need} (has {header})")
    mi, ti, gi = (header.index(c) for c in need)
    ids, titles, genres, years = [], [], [], []
    for row in rows:
        if not row:
            continue
        ids.append(row[mi].strip())
        titles.append(row[ti].strip())
        genres.append([g for g in row[gi].split("|") if g])
        m = _YEAR.search(row[ti])
        years.append(int(m.group(1)) if m else None)
    catalog = ItemTexts(ids, [""] * len(ids))
    interactions = load_interactions_csv(d / "ratings.csv", catalog, min_rating=min_rating)
    user_pos = {u: i for i, u in enumerate(interactions.user_ids)}
    tags: list[tuple[int, int, str, float]] = []
    tag_users: list[str] = []
    if (d / "tags.csv").is_file():
        th, trows = _open_csv(d / "tags.csv", "tags")
        ui, ii, gi2, tti = (th.index(c) for c in ("userId", "movieId", "tag", "timestamp"))
        for n, row in enumerate(trows, start=2):
            if not row:
                continue
            pos = catalog.index.get(row[ii].strip())
            if pos is None:
                raise NotFound(f"tags.csv line {n}: movie id {row[ii]!r} is not in movies.csv")
            tag = " ".join(row[gi2].split())
            if not tag:
                continue
            raw_user = row[ui].strip()
            tags.append((user_pos.get(raw_user, -1), pos, tag, float(row[tti])))
            tag_users.append(raw_user)
    ml = MovieLens(catalog, interactions, titles, genres, years, tags, tag_users)
    ml.catalog.texts = ml.texts(with_tags=True)
    return ml

