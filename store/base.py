"""The vector-store interface: named collections of (id, vector, JSON payload) records, searched by inner
product. Backends: `EmbeddedStore` (store/embedded.py: SQLite + in-memory exact scan / IVF index) and
`MilvusStore` (store/milvus.py: a Milvus server or a milvus-lite file). Both pass the same tests
(tests/test_store.py).

Contract every backend keeps:

- A collection records its dimension, metric and a small JSON `meta` (the recommender keeps its model
  fingerprint there, the collections API the CLIP model id). Creating an existing name is a `Conflict`.
- `metric="ip"`: score = vector . query, exactly (the recommender's item rows [v, b] against users [u, 1]);
  `metric="cosine"`: vectors and queries are L2-normalised on the way in, then the same inner product.
- Writes are all or nothing from the caller's point of view: every argument is validated before anything is
  written, and one `upsert`/`delete` is one transaction (embedded) or one request (Milvus).
- A write is visible to the next read at once (embedded: same process; Milvus: Strong consistency, so from
  every process and every replica).
- `filter` is {path: value | [values]}: equality (or membership) on the payload's JSON, path components
  separated by "." (`{"metadata.colour": "red"}`).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..models.errors import Conflict, InvalidInput, NotFound
from ..models.limits import COLLECTION_NAME_PATTERN, MAX_ID_CHARS, check_k

NAME_RE = re.compile(COLLECTION_NAME_PATTERN)
PATH_PART_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
METRICS = ("ip", "cosine")
MAX_FILTER_VALUES = 256

Scalar = str | int | float | bool


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    dim: int
    metric: str
    meta: dict = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True)
class Record:
    id: str
    payload: dict
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(f"collection name {name!r}: use 1-63 letters, digits or '_', starting with a letter")
    return name


def check_ids(ids: object, what: str = "ids") -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidInput(f"{what} must be a list of ids")
    for i in ids:
        if not isinstance(i, str) or not i or len(i) > MAX_ID_CHARS:
            raise InvalidInput(f"{what}: ids must be non-empty strings of at most {MAX_ID_CHARS} characters")
    return list(ids)


def check_filter(flt: object) -> dict[tuple[str, ...], list[Scalar]]:
    """{"a.b": value | [values]} -> {("a", "b"): [values]}; refuses anything else with a clear message."""
    if flt is None:
        return {}
    if not isinstance(flt, Mapping):
        raise InvalidInput("filter must be an object of {field: value or [values]}")
    out: dict[tuple[str, ...], list[Scalar]] = {}
    for key, value in flt.items():
        parts = tuple(str(key).split("."))
        if not all(PATH_PART_RE.match(p) for p in parts) or len(parts) > 4:
            raise InvalidInput(f"filter field {key!r}: use letters, digits and '_' (nested fields joined by '.')")
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise InvalidInput(f"filter field {key!r}: give a value or a list of 1-{MAX_FILTER_VALUES} values")
        for v in values:
            if not isinstance(v, (str, int, float, bool)) or (isinstance(v, float) and not math.isfinite(v)):
                raise InvalidInput(f"filter field {key!r}: values must be strings, numbers or booleans")
        out[parts] = values
    return out


def as_matrix(vectors: object, dim: int, what: str = "vectors") -> np.ndarray:
    try:
        m = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be numbers") from None
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != dim:
        raise InvalidInput(f"{what} must have dimension {dim}, got shape {tuple(m.shape)}")
    if not np.isfinite(m).all():
        raise InvalidInput(f"{what} contain NaN or infinity")
    return m


def normalise(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInput("a zero vector has no direction (cosine collection)")
    return (m / norms).astype(np.float32)


class VectorStore(ABC):
    """Collections of (id, vector, payload); see the module docstring for the contract."""

    kind: str = "abstract"
    shared: bool = False  # True: several processes/replicas may use the store at once (a Milvus server)

    # -- collections ----------------------------------------------------------------------
    @abstractmethod
    def create_collection(self, name: str, dim: int, metric: str = "ip", meta: dict | None = None) -> CollectionInfo:
        """Create it; `Conflict` if the name exists."""

    @abstractmethod
    def collection(self, name: str) -> CollectionInfo | None: ...

    @abstractmethod
    def collections(self) -> list[CollectionInfo]: ...

    @abstractmethod
    def set_meta(self, name: str, meta: dict) -> None: ...

    @abstractmethod
    def drop_collection(self, name: str) -> bool:
        """Drop it with every record; False if it did not exist."""

    # -- records --------------------------------------------------------------------------
    @abstractmethod
    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        """Insert or replace records, all or nothing."""

    @abstractmethod
    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> dict[str, Record]:
        """The records that exist among `ids` (missing ones are absent from the dict)."""

    @abstractmethod
    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete by id; the number that existed."""

    @abstractmethod
    def count(self, name: str) -> int: ...

    @abstractmethod
    def search(self, name: str, queries: np.ndarray, k: int, filter: dict | None = None,
               exclude: Sequence[str] = ()) -> list[list[Hit]]:
        """Top-k hits per query row, best first; `exclude` ids never appear."""

    @abstractmethod
    def scan(self, name: str, batch: int = 1000, with_vectors: bool = False) -> Iterator[list[Record]]:
        """Every record (payloads; vectors too if `with_vectors`), in batches."""

    def missing(self, name: str, ids: Sequence[str]) -> list[str]:
        found = self.get(name, ids)
        return [i for i in ids if i not in found]

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of the records that exist among `ids` (no payloads read)."""
        return {i: r.vector for i, r in self.get(name, ids, with_vectors=True).items() if r.vector is not None}

    def close(self) -> None:
        pass

    # -- helpers shared by the backends ---------------------------------------------------
    def _require(self, name: str) -> CollectionInfo:
        info = self.collection(name)
        if info is None:
            raise NotFound(f"unknown collection {name!r}")
        return info

    @staticmethod
    def _check_create(name: str, dim: object, metric: str) -> None:
        check_name(name)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 32768:
            raise InvalidInput(f"dim must be an integer in [1, 32768], got {dim!r}")
        if metric not in METRICS:
            raise InvalidInput(f"metric must be one of {', '.join(METRICS)}")

    @staticmethod
    def _check_upsert(info: CollectionInfo, ids: Sequence[str], vectors: object,
                      payloads: Sequence[dict]) -> np.ndarray:
        ids = check_ids(ids)
        if len(set(ids)) != len(ids):
            raise InvalidInput("the same id appears twice in one write")
        m = as_matrix(vectors, info.dim)
        if len(m) != len(ids) or len(payloads) != len(ids):
            raise InvalidInput(f"{len(ids)} ids, {len(m)} vectors and {len(payloads)} payloads: one each")
        if any(not isinstance(p, dict) for p in payloads):
            raise InvalidInput("payloads must be JSON objects")
        return normalise(m) if info.metric == "cosine" else m

    @staticmethod
    def _queries(info: CollectionInfo, queries: object, k: object) -> np.ndarray:
        check_k(k)
        q = as_matrix(queries, info.dim, "query vectors")
        return normalise(q) if info.metric == "cosine" else q


__all__ = ["CollectionInfo", "Conflict", "Hit", "Record", "VectorStore", "check_filter", "check_ids",
           "check_name", "normalise"]
