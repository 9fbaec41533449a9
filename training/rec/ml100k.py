"""MovieLens ml-100k, read from the files recbole 1.2.1's wheel ships, in zest's item-text/interaction format.

The wheel (``pip download recbole==1.2.1 --no-deps``, checked against its SHA-256) is kept in a cache
directory; nothing is installed and no data is vendored: GroupLens' terms allow research use and
redistribution only under the same terms (see benchmarks/README.md). Item text is built exactly like
ml-latest-small's (:func:`~zest.training.rec.data.movie_text` of ``"Title (year)"`` and the genres, ml-100k
genre names mapped to ml-latest-small's), and every rating is one implicit interaction.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from ...models.errors import ZestError
from .data import Interactions, ItemTexts, MovieLens

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k"
DEFAULT_CACHE = Path(os.environ.get("ZEST_DATA_CACHE", Path.home() / ".cache" / "zest" / "data"))
# ml-100k genre names -> ml-latest-small's, so that both catalogues' texts say the same thing the same way
GENRES = {"Children's": "Children", "unknown": ""}
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


class DatasetUnavailable(ZestError):
    """The recbole wheel could not be fetched (no registry) or is not the expected file."""


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(cache_dir: str | os.PathLike | None = None, timeout: float = 300) -> Path:
    """The recbole 1.2.1 wheel in ``cache_dir`` (downloaded with pip the first time); raises DatasetUnavailable."""
    d = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    path = d / WHEEL
    if not path.is_file():
        d.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "recbole==1.2.1", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(d)]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DatasetUnavailable(f"pip download recbole==1.2.1 did not finish in {timeout:.0f}s") from None
        if proc.returncode != 0 or not path.is_file():
            raise DatasetUnavailable(f"pip download recbole==1.2.1 failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    digest = _sha256(path)
    if digest != WHEEL_SHA256:
        raise DatasetUnavailable(f"{path} has SHA-256 {digest}, expected {WHEEL_SHA256}; delete it to fetch again")
    return path


def _fix_text(s: str) -> str:
    """recbole's file holds UTF-8 that was decoded as Latin-1 and encoded again ("MisÃ©rables"): undo that."""
    try:
        return s.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return s


def _rows(z: zipfile.ZipFile, suffix: str) -> list[list[str]]:
    lines = z.read(MEMBER + suffix).decode("utf-8").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]


def load_ml100k(cache_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> MovieLens:
    """ml-100k as a :class:`MovieLens` (no tags): 1,682 items, 943 users, 100,000 interactions."""
    path = Path(wheel) if wheel else fetch_wheel(cache_dir)
    with zipfile.ZipFile(path) as z:
        items, inter = _rows(z, ".item"), _rows(z, ".inter")
    ids, titles, genres, years = [], [], [], []
    for item_id, title, year, classes in items:
        title = " ".join(_fix_text(title).split())
        if title.lower() == "unkonwn":  # item 267 has no title in ml-100k
            title = "unknown"
        m = _YEAR.search(title)  # one title (item 1412) carries its year itself, with "V" as release_year
        y = int(m.group(1)) if m else (int(year) if year.strip().isdigit() else None)
        title = _YEAR.sub("", title)
        ids.append(item_id.strip())
        titles.append(f"{title} ({y})" if y else title)
        genres.append([g2 for g in classes.split() if (g2 := GENRES.get(g, g))])
        years.append(y)
    catalog = ItemTexts(ids, [""] * len(ids))
    users: dict[str, int] = {}
    u = np.fromiter((users.setdefault(r[0], len(users)) for r in inter), np.int64, len(inter))
    i = catalog.positions(r[1] for r in inter)
    t = np.asarray([float(r[3]) for r in inter], np.float64)
    ml = MovieLens(catalog, Interactions(u, i, t, list(users)), titles, genres, years, [], [])
    ml.catalog.texts = ml.texts(with_tags=False)
    return ml


_ARTICLES = {"the", "a", "an", "la", "le", "les", "il", "el", "der", "die", "das", "l"}


def title_keys(title: str) -> set[str]:
    """A title's names without year, case, punctuation and articles, ``&``/``+`` read as "and": the main one and
    each alternative in parentheses (``"Postman, The (Postino, Il) (1995)"`` -> ``{"postman", "postino"}``)."""
    t = _YEAR.sub("", title).replace("&", " and ").replace("+", " and ")
    names = [t.split(" (")[0]] + re.findall(r"\(([^()]*)\)", t)
    names = [re.sub(r"^a\.k\.a\.\s*", "", n.strip(), flags=re.IGNORECASE) for n in names]
    keys = (" ".join(w for w in re.findall(r"[^\W_]+", n.lower()) if w not in _ARTICLES) for n in names)
    return {k for k in keys if k}


def unseen_titles(target_titles: list[str], source_titles: list[str]) -> np.ndarray:
    """Mask of the target items whose title occurs nowhere among the source's titles: no name of it (main or
    alternative, :func:`title_keys`) equals a source name, and none is contained word-wise in a source name of
    the same year or contains one (``"Empire Strikes Back, The (1980)"`` is ``"Star Wars: Episode V - The Empire
    Strikes Back (1980)"``; a subtitle after ": " counts as a name here), nor, with three words or more, is
    contained in a source name of any year (``"Grand Day Out, A (1992)"``). Errs towards "seen": the strict zero-shot set is the smaller for it."""
    names: set[str] = set()
    by_year: dict[str, set[str]] = {"": set()}
    for t in source_titles:
        keys = title_keys(t)
        names |= keys
        m = _YEAR.search(t)
        by_year.setdefault(m.group(1) if m else "", set()).update(keys)
    out = []
    for t in target_titles:
        keys = title_keys(t)
        m = _YEAR.search(t)
        same_year = by_year.get(m.group(1), set()) if m else set()
        subtitle = title_keys(t.split(": ", 1)[1]) if ": " in t else set()  # "Star Trek: The Wrath of Khan"
        inside = any(f" {a} " in f" {b} " or f" {b} " in f" {a} " for a in keys | subtitle for b in same_year)
        long = {a for a in keys | subtitle if a.count(" ") >= 2}  # 3+ words: contained in a name of any year
        inside = inside or any(f" {a} " in f" {b} " for a in long for b in names)
        out.append(not (keys & names) and not inside)
    return np.asarray(out, bool)


def first_users(ml: MovieLens, n_users: int) -> MovieLens:
    """The first ``n_users`` users (in file order) and only the items they interacted with: a small catalogue."""
    inter = ml.interactions
    keep = inter.user < n_users
    items = np.unique(inter.item[keep])
    new = np.full(len(ml.catalog), -1, np.int64)
    new[items] = np.arange(len(items))
    sub = MovieLens(ItemTexts([ml.catalog.ids[i] for i in items], [ml.catalog.texts[i] for i in items]),
                    Interactions(inter.user[keep], new[inter.item[keep]], inter.time[keep], inter.user_ids[:n_users]),
                    [ml.titles[i] for i in items], [ml.genres[i] for i in items], [ml.years[i] for i in items], [], [])
    return sub
