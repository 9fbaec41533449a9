"""zest's vector store: one interface (`VectorStore`, store/base.py) for the recommender's item catalogue
and the CLIP collections, with two backends chosen by one setting, `ZEST_VECTOR_STORE`:

| value                                   | backend                                                          |
|-----------------------------------------|------------------------------------------------------------------|
| `embedded` (default)                    | SQLite under ZEST_DATA_DIR + in-memory exact scan / IVF index    |
| `milvus://HOST:PORT[?index=HNSW&db=DB]` | a Milvus server or cluster (shared by every replica)             |
| `milvus+https://HOST[:PORT][?...]`      | the same over TLS (Zilliz Cloud, a TLS-terminated Milvus)        |
| `milvus-lite:DIR`                       | milvus-lite data files in DIR, one process each (development)    |

A Milvus token (user:password or an API key) comes from ZEST_MILVUS_TOKEN, never from the URI. This package
is its own top-level folder (mapped to `zest.store`) because it is neither inference (`zest.models`) nor
HTTP (`zest.service`): it is the persistence both of them sit on, and it is importable without BentoML.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .base import CollectionInfo, Hit, Record, VectorStore

ROLES = ("catalog", "collections")
_INDEX_PARAM_KEYS = {"M": int, "efConstruction": int, "nlist": int}
_SEARCH_PARAM_KEYS = {"ef": int, "nprobe": int}


def is_shared(spec: str) -> bool:
    """True when every process and replica using `spec` sees one store (a Milvus server)."""
    return spec.strip().startswith(("milvus://", "milvus+https://"))


def describe(spec: str) -> str:
    """`spec` with nothing secret in it, for logs."""
    s = spec.strip() or "embedded"
    return s.split("?", 1)[0]


def check_spec(spec: str) -> None:
    """Raise ValueError naming ZEST_VECTOR_STORE when `spec` is not one of the forms above."""
    s = spec.strip()
    if s in ("", "embedded") or s.startswith("milvus-lite:"):
        return
    if is_shared(s):
        parts = urlsplit(s)
        if not parts.hostname:
            raise ValueError(f"ZEST_VECTOR_STORE={spec!r}: no host (milvus://HOST:PORT)")
        for key in parse_qs(parts.query):
            if key not in ("index", "db", "prefix", *_INDEX_PARAM_KEYS, *_SEARCH_PARAM_KEYS):
                raise ValueError(f"ZEST_VECTOR_STORE={spec!r}: unknown option {key!r}")
        return
    raise ValueError(f"ZEST_VECTOR_STORE={spec!r}: use embedded, milvus://HOST:PORT, milvus+https://HOST or "
                     "milvus-lite:DIR")


def open_store(spec: str, role: str, data_dir: str | Path = "~/.zest", token: str = "",
               ann_min_rows: int = 100_000, nprobe: int = 192) -> VectorStore:
    """The store for `role` ("catalog": the recommender's items; "collections": the CLIP collections).

    Embedded and milvus-lite keep one file per role (each role is served by one process); a Milvus server
    holds both roles in one namespace (`zest_` collections)."""
    if role not in ROLES:
        raise ValueError(f"unknown store role {role!r}")
    check_spec(spec)
    s = spec.strip()
    if s in ("", "embedded"):
        from .embedded import EmbeddedStore

        return EmbeddedStore(Path(data_dir).expanduser() / f"store-{role}.sqlite3", ann_min_rows=ann_min_rows,
                             nprobe=nprobe)
    from .milvus import MilvusStore

    if s.startswith("milvus-lite:"):
        directory = Path(s[len("milvus-lite:"):]).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        return MilvusStore(str(directory / f"{role}.db"), index_type="FLAT", shared=False)
    parts = urlsplit(s)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = "https" if parts.scheme == "milvus+https" else "http"
    port = parts.port or (443 if scheme == "https" else 19530)
    index_params = {k: _INDEX_PARAM_KEYS[k](v) for k, v in query.items() if k in _INDEX_PARAM_KEYS}
    search_params = {k: _SEARCH_PARAM_KEYS[k](v) for k, v in query.items() if k in _SEARCH_PARAM_KEYS}
    return MilvusStore(f"{scheme}://{parts.hostname}:{port}", token=token, db_name=query.get("db", ""),
                       prefix=query.get("prefix", "zest_"), index_type=query.get("index", "AUTOINDEX"),
                       index_params=index_params, search_params=search_params, shared=True)


__all__ = ["CollectionInfo", "Hit", "Record", "VectorStore", "check_spec", "describe", "is_shared", "open_store"]
