"""The Milvus backend (pymilvus `MilvusClient`): a Milvus server or cluster (`milvus://host:port`), Zilliz
Cloud (`milvus+https://...`), or a milvus-lite data file for one process.

Every zest collection is a Milvus collection `<prefix><name>` (prefix `zest_`) with three fields: `id`
(VARCHAR primary key), `vector` (FLOAT_VECTOR, metric IP) and `payload` (JSON). A registry collection
`<prefix>_registry` records each collection's dimension, metric and meta, so every replica sees the same
set of collections. Reads and writes use Strong consistency: a write acknowledged to one zest replica is
seen by the next request on any other.

Scores are Milvus's IP distance: the inner product, as in the embedded backend (cosine collections store
unit vectors). Filters become Milvus boolean expressions on the JSON field
(`payload["metadata"]["colour"] == "red"`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np

from ..models.errors import Conflict, InsufficientStorage, Unavailable
from ..models.limits import MAX_ID_CHARS
from .base import CollectionInfo, Hit, Record, VectorStore, check_filter, check_ids, check_name

_REGISTRY_DIM = 2
_BATCH = 1000
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _writes(uri: str):
    """Milvus's refusal of a write for lack of disk (its disk protection: "quota exceeded[reason=disk quota
    exceeded ...]", "deny to write") as `InsufficientStorage` (507); other errors as they are."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        text = str(getattr(exc, "message", "") or exc).lower()
        if "disk quota" not in text and "deny to write" not in text:
            raise
        log.error("Milvus at %s refused a write: %s", uri, exc)
        raise InsufficientStorage(f"the write could not be stored: Milvus refused it ({getattr(exc, 'message', exc)}); "
                                  "nothing was stored. Give Milvus more disk, then retry") from exc


def _literal(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # double-quoted, escaped; Milvus's parser refuses \uXXXX
    return repr(v)


def filter_expression(flt: dict, exclude: Sequence[str] = ()) -> str:
    """A Milvus boolean expression for a (checked) filter and excluded ids; '' for none."""
    parts = []
    for path, values in check_filter(flt).items():
        field = "payload" + "".join(f'["{p}"]' for p in path)
        parts.append("(" + " or ".join(f"{field} == {_literal(v)}" for v in values) + ")")
    if exclude:
        parts.append(f"id not in [{', '.join(json.dumps(i, ensure_ascii=False) for i in exclude)}]")
    return " and ".join(parts)


class MilvusStore(VectorStore):
    kind = "milvus"

    def __init__(self, uri: str, token: str = "", db_name: str = "", prefix: str = "zest_",
                 index_type: str = "AUTOINDEX", index_params: dict | None = None,
                 search_params: dict | None = None, shared: bool = True):
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError as exc:  # pragma: no cover - pymilvus is a dependency
            raise Unavailable("the Milvus backend needs pymilvus: pip install 'zest[milvus]'") from exc
        self._DataType = DataType
        self.uri = uri
        self.prefix = prefix
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self.shared = shared
        kwargs = {"uri": uri}
        if token:
            kwargs["token"] = token
        if db_name:
            kwargs["db_name"] = db_name
        try:
            self.client = MilvusClient(**kwargs)
        except Exception as exc:
            raise Unavailable(f"cannot connect to Milvus at {uri}: {exc}") from exc
        self.registry = f"{prefix}_registry"
        if not self.client.has_collection(self.registry):
            self._create_physical(self.registry, _REGISTRY_DIM, "FLAT", {})
        self._infos: dict[str, CollectionInfo] = {}

    # -- physical collections -------------------------------------------------------------
    def _physical(self, name: str) -> str:
        return self.prefix + name

    def _create_physical(self, physical: str, dim: int, index_type: str, index_params: dict) -> None:
        from pymilvus import MilvusClient

        DataType = self._DataType
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_CHARS)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("payload", DataType.JSON)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=index_params)
        self.client.create_collection(physical, schema=schema, index_params=index,
                                      consistency_level="Strong")

    # -- collections ----------------------------------------------------------------------
    def _registry_rows(self, names: Sequence[str] | None = None) -> list[dict]:
        if names is None:
            rows = []
            it = self.client.query_iterator(self.registry, batch_size=1000, filter="", output_fields=["payload"])
            try:
                while batch := it.next():
                    rows += batch
            finally:
                it.close()
            return rows
        return list(self.client.get(self.registry, ids=list(names), output_fields=["payload"]))

    @staticmethod
    def _info(row: dict) -> CollectionInfo:
        p = row["payload"]
        return CollectionInfo(row["id"], int(p["dim"]), p["metric"], dict(p.get("meta") or {}),
                              float(p.get("created_at", 0.0)))

    def _put_registry(self, info: CollectionInfo) -> None:
        payload = {"dim": info.dim, "metric": info.metric, "meta": info.meta, "created_at": info.created_at}
        self.client.upsert(self.registry, [{"id": info.name, "vector": [0.0] * _REGISTRY_DIM, "payload": payload}])

    def create_collection(self, name: str, dim: int, metric: str = "ip", meta: dict | None = None) -> CollectionInfo:
        self._check_create(name, dim, metric)
        if self.collection(name) is not None:
            raise Conflict(f"collection {name!r} exists already")
        physical = self._physical(name)
        if self.client.has_collection(physical):  # left by a create that failed half-way
            self.client.drop_collection(physical)
        self._create_physical(physical, dim, self.index_type, self.index_params)
        info = CollectionInfo(name, dim, metric, dict(meta or {}), time.time())
        self._put_registry(info)
        self._infos[name] = info
        return info

    def collection(self, name: str) -> CollectionInfo | None:
        check_name(name)
        rows = self._registry_rows([name])  # always asked: another replica may have dropped or changed it
        if not rows:
            self._infos.pop(name, None)
            return None
        info = self._infos[name] = self._info(rows[0])
        return info

    def _cached(self, name: str) -> CollectionInfo:
        """Dimension and metric never change for a name while it exists; a dropped one fails the request."""
        info = self._infos.get(name)
        return info if info is not None else self._require(name)

    def collections(self) -> list[CollectionInfo]:
        return sorted((self._info(r) for r in self._registry_rows()), key=lambda c: c.name)

    def set_meta(self, name: str, meta: dict) -> None:
        info = self._require(name)
        self._put_registry(CollectionInfo(info.name, info.dim, info.metric, dict(meta), info.created_at))
        self._infos.pop(name, None)

    def drop_collection(self, name: str) -> bool:
        existed = self.collection(name) is not None
        self.client.delete(self.registry, ids=[name])
        self._infos.pop(name, None)
        if self.client.has_collection(self._physical(name)):
            self.client.drop_collection(self._physical(name))
        return existed

    # -- records --------------------------------------------------------------------------
    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        info = self._cached(name)
        m = self._check_upsert(info, ids, vectors, payloads)
        if not len(ids):
            return
        for p in payloads:
            json.dumps(p)  # not JSON: refused before anything is written
        rows = [{"id": i, "vector": v.tolist(), "payload": p} for i, v, p in zip(ids, m, payloads)]
        with _writes(self.uri):
            self.client.upsert(self._physical(name), rows)  # one request: applied whole or not at all

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> dict[str, Record]:
        self._cached(name)
        ids = check_ids(ids)
        fields = ["payload", "vector"] if with_vectors else ["payload"]
        out: dict[str, Record] = {}
        for a in range(0, len(ids), _BATCH):
            for row in self.client.get(self._physical(name), ids=ids[a:a + _BATCH], output_fields=fields):
                vec = np.asarray(row["vector"], np.float32) if with_vectors else None
                out[row["id"]] = Record(row["id"], row["payload"], vec)
        return out

    def missing(self, name: str, ids: Sequence[str]) -> list[str]:
        self._cached(name)
        ids = check_ids(ids)
        found: set[str] = set()
        for a in range(0, len(ids), _BATCH):
            part = ids[a:a + _BATCH]
            expr = f"id in {json.dumps(part, ensure_ascii=False)}"
            rows = self.client.query(self._physical(name), filter=expr, output_fields=["id"])
            found |= {r["id"] for r in rows}
        return [i for i in ids if i not in found]

    def delete(self, name: str, ids: Sequence[str]) -> int:
        self._cached(name)
        ids = check_ids(ids)
        existing = len(ids) - len(self.missing(name, ids))
        if ids:
            with _writes(self.uri):
                self.client.delete(self._physical(name), ids=list(ids))
        return existing

    def count(self, name: str) -> int:
        self._cached(name)
        rows = self.client.query(self._physical(name), filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def search(self, name: str, queries: np.ndarray, k: int, filter: dict | None = None,
               exclude: Sequence[str] = ()) -> list[list[Hit]]:
        info = self._cached(name)
        q = self._queries(info, queries, k)
        expr = filter_expression(filter or {}, check_ids(list(exclude), "exclude"))
        params = {"metric_type": "IP", "params": dict(self.search_params)}
        res = self.client.search(self._physical(name), data=q.tolist(), limit=k, filter=expr,
                                 output_fields=["payload"], search_params=params)
        return [[Hit(h["id"], float(h["distance"]), h["entity"]["payload"]) for h in hits] for hits in res]

    def scan(self, name: str, batch: int = 1000, with_vectors: bool = False) -> Iterator[list[Record]]:
        self._cached(name)
        fields = ["payload", "vector"] if with_vectors else ["payload"]
        it = self.client.query_iterator(self._physical(name), batch_size=batch, filter="", output_fields=fields)
        try:
            while rows := it.next():
                yield [Record(r["id"], r["payload"], np.asarray(r["vector"], np.float32) if with_vectors else None)
                       for r in rows]
        finally:
            it.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a client whose server is gone must not raise
            self.client.close()
