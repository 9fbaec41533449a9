"""A portable, versioned dump of zest's vector store (`zest store export` / `import` / `migrate`), readable by
any backend and by anything that reads JSON and NumPy.

A dump is a directory: per collection `records-NNNNNN.jsonl` (id, payload) and `vectors-NNNNNN.npy` (float32)
chunks, and `manifest.json`, written last (its fields: the README's "Backup and migration"; `export` below).
Export and import stream one chunk at a time; import creates or merges by id into a collection of the same
model (else 409) and checks every chunk's checksum and the final count.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import __version__
from ..models.errors import Conflict, InvalidInput, NotFound, ZestError
from . import ROLES, open_store
from .base import CollectionInfo, Record, VectorStore
from .embedded import EmbeddedSnapshot

FORMAT = "zest-store-dump"
VERSION = 1
MANIFEST = "manifest.json"
ROLE_PREFIXES = {"collections": "c_", "catalog": "rec_catalog_"}
IDENTITY_KEYS = {"collections": "model", "catalog": "fingerprint"}  # the meta key naming the model
CHUNK_ROWS = 20_000
BATCH = 2_000


class CountMismatch(ZestError):
    """The target's count after an import is not what the import should have left."""


class Source(Protocol):
    """What a dump is read from: a `VectorStore`, an `EmbeddedSnapshot`, a `DumpReader`."""

    def collections(self) -> list[CollectionInfo]: ...

    def count(self, name: str) -> int: ...

    def scan(self, name: str, batch: int = 1000, with_vectors: bool = False) -> Iterator[list[Record]]: ...


@dataclass(frozen=True)
class Selection:
    """Which collections: every one (the default), one CLIP collection by its API name, or the catalogue."""

    collection: str | None = None
    catalog: bool = False

    def wants(self, role: str, store_name: str) -> bool:
        if not store_name.startswith(ROLE_PREFIXES[role]):
            return False
        if self.collection is None and not self.catalog:
            return True
        if role == "catalog":
            return self.catalog
        return self.collection == store_name[len(ROLE_PREFIXES[role]):]


def role_of(store_name: str) -> str | None:
    return next((r for r, p in ROLE_PREFIXES.items() if store_name.startswith(p)), None)


def model_of(info: CollectionInfo, role: str) -> object:
    return info.meta.get(IDENTITY_KEYS[role])


def selected(sources: Iterable[tuple[str, Source]], selection: Selection) -> list[tuple[str, Source, CollectionInfo]]:
    """(role, source, info) of every selected collection; NotFound if the selection names one that is absent."""
    out, seen = [], set()
    for role, source in sources:
        for info in source.collections():
            if info.name not in seen and selection.wants(role, info.name):
                seen.add(info.name)
                out.append((role, source, info))
    if not out and (selection.collection is not None or selection.catalog):
        what = f"collection {selection.collection!r}" if selection.collection is not None else "recommender catalogue"
        raise NotFound(f"no {what} in the source")
    return out


def store_sources(spec: str, data_dir: str | Path, token: str = "") -> list[tuple[str, Source]]:
    """(role, source) of every role of the store `spec` names. The embedded store is read through
    `EmbeddedSnapshot` (consistent, read-only, fine while a server writes it; a role with no file yet has
    nothing); any other backend through its `VectorStore`."""
    if spec.strip() in ("", "embedded"):
        files = [(role, Path(data_dir).expanduser() / f"store-{role}.sqlite3") for role in ROLES]
        if not any(path.is_file() for _, path in files):
            raise NotFound(f"no embedded store under {Path(data_dir).expanduser()} (no store-*.sqlite3)")
        return [(role, EmbeddedSnapshot(path)) for role, path in files if path.is_file()]
    return [(role, open_store(spec, role, data_dir=data_dir, token=token)) for role in ROLES]


def close_all(sources: Iterable[object]) -> None:
    for s in sources:
        close = getattr(s, "close", None)
        if close is not None:
            close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- export ----------------------------------------------------------------------------------------------------
def export(sources: Iterable[tuple[str, Source]], out: str | Path, selection: Selection = Selection(),
           source_name: str = "", chunk_rows: int = CHUNK_ROWS, progress: Callable[[int], object] | None = None
           ) -> dict:
    """Write the selected collections of `sources` ((role, source) pairs) as a dump in `out` (a new or empty
    directory); returns the manifest."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty: export into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for role, source, info in selected(sources, selection):
        entries.append(_export_one(source, role, info, out, chunk_rows, progress))
    # role: "collections" (a CLIP collection, store name c_<name>) or "catalog" (the recommender's items,
    # rec_catalog_<dim>); each entry's `model` is what makes vectors comparable (CLIP model id, item model's
    # fingerprint); payloads are carried as they are.
    manifest = {"format": FORMAT, "version": VERSION, "zest_version": __version__,
                "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "source": source_name, "collections": entries}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    _fsync(tmp)
    tmp.replace(out / MANIFEST)
    return manifest


class _Chunk:
    """One chunk being written: records streamed to its JSONL file (hashed as written), vectors gathered (at most
    `chunk_rows` x dim floats) and saved when it closes."""

    def __init__(self, out: Path, folder: Path, k: int):
        self.out = out
        self.records, self.vectors = folder / f"records-{k:06d}.jsonl", folder / f"vectors-{k:06d}.npy"
        self.file = open(self.records, "wb")  # noqa: SIM115 - closed in close()
        self.hash = hashlib.sha256()
        self.rows: list[np.ndarray] = []

    def add(self, rec: Record) -> None:
        line = json.dumps({"id": rec.id, "payload": rec.payload}, ensure_ascii=False).encode() + b"\n"
        self.file.write(line)
        self.hash.update(line)
        self.rows.append(np.asarray(rec.vector, np.float32))

    def close(self) -> dict:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        np.save(self.vectors, np.stack(self.rows).astype("<f4", copy=False), allow_pickle=False)
        _fsync(self.vectors)
        return {"records": self.records.relative_to(self.out).as_posix(),
                "vectors": self.vectors.relative_to(self.out).as_posix(), "count": len(self.rows),
                "sha256": {"records": self.hash.hexdigest(), "vectors": _sha256(self.vectors)}}


def _export_one(source: Source, role: str, info: CollectionInfo, out: Path, chunk_rows: int,
                progress: Callable[[int], object] | None) -> dict:
    folder = out / info.name
    folder.mkdir()
    chunks: list[dict] = []
    chunk: _Chunk | None = None
    for batch in source.scan(info.name, min(BATCH, chunk_rows), with_vectors=True):
        for rec in batch:
            if chunk is None:
                chunk = _Chunk(out, folder, len(chunks))
            chunk.add(rec)
            if len(chunk.rows) == chunk_rows:
                chunks.append(chunk.close())
                chunk = None
        if progress is not None:
            progress(len(batch))
    if chunk is not None:
        chunks.append(chunk.close())
    return {"role": role, "name": info.name[len(ROLE_PREFIXES[role]):] if role == "collections" else info.name,
            "store_name": info.name, "dim": info.dim, "metric": info.metric, "meta": info.meta,
            "model": model_of(info, role), "count": sum(c["count"] for c in chunks), "created_at": info.created_at,
            "chunks": chunks}


# -- reading a dump --------------------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict:
    path = Path(directory).expanduser() / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{path.parent} is not a complete zest dump (no {MANIFEST}: the export did not finish, "
                           "or this is not a dump)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise InvalidInput(f"{path} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a {FORMAT} manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise InvalidInput(f"{path.parent} is a dump of format version {version!r}; this zest reads versions up "
                           f"to {VERSION}: import it with a newer zest")
    return manifest


class DumpReader:
    """A dump directory as a `Source` (per role): checksums and shapes are checked chunk by chunk, as read."""

    def __init__(self, directory: str | Path, role: str | None = None):
        self.dir = Path(directory).expanduser()
        self.manifest = read_manifest(self.dir)
        self._entries = {e["store_name"]: e for e in self.manifest["collections"] if role in (None, e["role"])}

    def collections(self) -> list[CollectionInfo]:
        return [CollectionInfo(e["store_name"], int(e["dim"]), e["metric"], dict(e.get("meta") or {}),
                               float(e.get("created_at", 0.0))) for e in self._entries.values()]

    def count(self, name: str) -> int:
        return int(self._entries[name]["count"])

    def scan(self, name: str, batch: int = 1000, with_vectors: bool = False) -> Iterator[list[Record]]:
        entry = self._entries[name]
        for chunk in entry["chunks"]:
            records, vecs = self.dir / chunk["records"], self.dir / chunk["vectors"]
            for path, key in ((records, "records"), (vecs, "vectors")):
                if not path.is_file() or _sha256(path) != chunk["sha256"][key]:
                    raise InvalidInput(f"{path} is missing or damaged (checksum mismatch): the dump is not usable")
            matrix = np.load(vecs, mmap_mode="r", allow_pickle=False)
            if matrix.shape != (chunk["count"], entry["dim"]) or matrix.dtype != np.float32:
                raise InvalidInput(f"{vecs}: shape {matrix.shape} {matrix.dtype}, the manifest says "
                                   f"({chunk['count']}, {entry['dim']}) float32")
            with open(records, "rb") as f:
                rows = 0
                out: list[Record] = []
                for line in f:
                    item = json.loads(line)
                    out.append(Record(item["id"], item["payload"], np.array(matrix[rows]) if with_vectors else None))
                    rows += 1
                    if len(out) == batch:
                        yield out
                        out = []
                if out:
                    yield out
            if rows != chunk["count"]:
                raise InvalidInput(f"{records}: {rows} records, the manifest says {chunk['count']}")


# -- import ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Copied:
    role: str
    name: str
    records: int
    count: int  # the target collection's count afterwards (checked)


def load(sources: Iterable[tuple[str, Source]], target: Callable[[str], VectorStore],
         selection: Selection = Selection(), batch: int = BATCH, progress: Callable[[int], object] | None = None
         ) -> list[Copied]:
    """Copy the selected collections of `sources` into the store `target(role)` gives; see the module doc."""
    plan = selected(sources, selection)
    stores = {role: target(role) for role in {r for r, _, _ in plan}}
    for role, _, info in plan:  # every refusal before anything is written
        _check_compatible(stores[role].collection(info.name), info, role)
    return [_load_one(source, info, role, stores[role], batch, progress) for role, source, info in plan]


def _check_compatible(existing: CollectionInfo | None, info: CollectionInfo, role: str) -> None:
    if existing is None:
        return
    mine, theirs = model_of(existing, role), model_of(info, role)
    if (existing.dim, existing.metric, mine) != (info.dim, info.metric, theirs):
        raise Conflict(f"collection {info.name!r} exists in the target with model {mine!r} (dim {existing.dim}, "
                       f"{existing.metric}); the dump's was made by {theirs!r} (dim {info.dim}, {info.metric}): "
                       "its vectors are not comparable. Drop the target collection or import into another store")


def _load_one(source: Source, info: CollectionInfo, role: str, store: VectorStore, batch: int,
              progress: Callable[[int], object] | None) -> Copied:
    if store.collection(info.name) is None:
        store.create_collection(info.name, info.dim, info.metric, info.meta)
    expected, records = store.count(info.name), 0
    for recs in source.scan(info.name, batch, with_vectors=True):
        ids = [r.id for r in recs]
        expected += len(store.missing(info.name, ids))
        store.upsert(info.name, ids, np.stack([np.asarray(r.vector, np.float32) for r in recs]),
                     [r.payload for r in recs])
        records += len(recs)
        if progress is not None:
            progress(len(recs))
    count = store.count(info.name)
    if count != expected:
        raise CountMismatch(f"count check failed for {info.name!r}: {records} records copied, the target should hold "
                       f"{expected} and holds {count} (was it written to meanwhile?)")
    return Copied(role, info.name, records, count)
