"""Request-level logic of the collections endpoints (image/text search over stored CLIP embeddings),
independent of HTTP and BentoML.

A collection is a vector-store collection `c_<name>` (cosine) whose records are CLIP embeddings of images or
texts, each with an id and optional JSON metadata; its meta records the CLIP model id, and its dimension is
the store's. A collection made by another model (or dimension) than the one this server runs is refused
with 409: its vectors would not be comparable. Items are embedded on write, through the same pipeline as
/embed/image and /embed/text (so the same limits and image checks apply), and everything is validated and
embedded before the one store write: a failed request stores nothing. A collection created with
`thumbnails=True` also keeps a small JPEG of each image item in its payload (service/thumbnails.py).
The methods are awaited on the event loop: store calls, decoding and checks run in worker threads, the
encoder is awaited (an item write sends its images and its texts to it together).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import anyio.to_thread
import numpy as np

from ..models.errors import Conflict, InvalidInput, NotFound
from ..models.limits import check_at_most, check_chars, check_count
from ..store import VectorStore
from ..store.base import CollectionInfo, Record, check_filter, check_name
from .pipeline import ClipPipeline, RawImage
from .settings import Settings
from .thumbnails import PAYLOAD_KEY, make_thumbnail, thumbnail_bytes

PREFIX = "c_"

P = ParamSpec("P")
R = TypeVar("R")


def in_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` (blocking: the store) as a coroutine function that runs it in a worker thread."""
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    return run


@dataclass
class NewItem:
    """One item of a write: an id, exactly one of text or image, optional metadata."""

    id: str
    text: str | None = None
    image: RawImage | None = None
    metadata: dict | None = field(default_factory=dict)


class Collections:
    def __init__(self, store: VectorStore, pipeline: ClipPipeline, settings: Settings):
        self.store = store
        self.pipeline = pipeline
        self.settings = settings
        self.model_id = pipeline.info.model_id
        self.dim = pipeline.info.dim

    # -- collections ----------------------------------------------------------------------
    def _describe(self, info, count: int | None = None) -> dict:
        return {"name": info.name[len(PREFIX):], "model": info.meta.get("model"), "dim": info.dim,
                "count": self.store.count(info.name) if count is None else count, "created_at": info.created_at,
                "thumbnails": bool(info.meta.get("thumbnails"))}

    def _usable(self, name: str):
        """The collection's store info, refused if it does not exist or belongs to another model."""
        info = self.store.collection(PREFIX + check_name(name))
        if info is None:
            raise NotFound(f"unknown collection {name!r}")
        if info.meta.get("model") != self.model_id or info.dim != self.dim:
            raise Conflict(f"collection {name!r} holds embeddings of model {info.meta.get('model')!r} (dim "
                           f"{info.dim}); this server runs {self.model_id!r} (dim {self.dim}): search it with "
                           "that model, or create a new collection")
        return info

    @in_thread
    def create(self, name: str, model: object = None, thumbnails: bool = False) -> dict:
        check_name(name)
        if model is not None and model != self.model_id:
            raise Conflict(f"this server embeds with {self.model_id!r}, not {model!r}")
        meta = {"model": self.model_id, **({"thumbnails": True} if thumbnails else {})}
        try:
            info = self.store.create_collection(PREFIX + name, self.dim, "cosine", meta)
        except Conflict:
            raise Conflict(f"collection {name!r} exists already") from None
        return self._describe(info, 0)

    @in_thread
    def list(self) -> dict:
        return {"collections": [self._describe(c) for c in self.store.collections() if c.name.startswith(PREFIX)]}

    @in_thread
    def describe(self, name: str) -> dict:
        info = self.store.collection(PREFIX + check_name(name))
        if info is None:
            raise NotFound(f"unknown collection {name!r}")
        return self._describe(info)

    @in_thread
    def drop(self, name: str) -> dict:
        if not self.store.drop_collection(PREFIX + check_name(name)):
            raise NotFound(f"unknown collection {name!r}")
        return {"deleted": name}

    # -- items ----------------------------------------------------------------------------
    def _metadata(self, metadata: object, where: str) -> dict:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            raise InvalidInput(f"{where}.metadata must be a JSON object")
        try:
            size = len(json.dumps(metadata, allow_nan=False).encode())
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}.metadata is not JSON") from None
        check_at_most(size, self.settings.max_metadata_bytes, f"{where}.metadata of {size} bytes", "bytes")
        return metadata

    async def add(self, name: str, items: Sequence[NewItem]) -> dict:
        info, ids, payloads, pixels = await anyio.to_thread.run_sync(self._checked_items, name, items)
        images = [n for n, it in enumerate(items) if it.image is not None]
        texts = [n for n, it in enumerate(items) if it.text is not None]
        image_vecs, text_vecs = await asyncio.gather(
            self.pipeline.encode_pixels(pixels) if pixels is not None else _nothing(),
            self.pipeline.encode_texts([str(items[n].text) for n in texts]) if texts else _nothing())
        vectors = np.zeros((len(items), self.dim), np.float32)
        if images:
            vectors[images] = np.asarray(image_vecs, np.float32)
        if texts:
            vectors[texts] = np.asarray(text_vecs, np.float32)
        count = await anyio.to_thread.run_sync(self._upsert, info.name, ids, vectors, payloads)
        return {"collection": name, "upserted": len(ids), "count": count}

    def _upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> int:
        self.store.upsert(collection, ids, vectors, payloads)
        return self.store.count(collection)

    def _checked_items(self, name: str, items: Sequence[NewItem]
                       ) -> tuple[CollectionInfo, Sequence[str], Sequence[dict], np.ndarray | None]:
        """The collection, the items' ids and payloads, and their images' pixels: everything checked and decoded
        before any model work (blocking: for a worker thread)."""
        s = self.settings
        info = self._usable(name)
        if not items:
            raise InvalidInput("no items: send at least one")
        texts = [(n, it.text) for n, it in enumerate(items) if it.text is not None]
        images = [(n, it.image) for n, it in enumerate(items) if it.image is not None]
        check_count(texts, "texts", s.max_texts, per_request=True)
        check_count(images, "images", s.max_images, per_request=True)
        ids, payloads = [], []
        for n, it in enumerate(items):
            where = f"items[{n}]"
            if (it.text is None) == (it.image is None):
                raise InvalidInput(f"{where}: give exactly one of 'text' or 'image'")
            payload = {"kind": "text" if it.text is not None else "image",
                       "metadata": self._metadata(it.metadata, where)}
            if it.text is not None:
                check_chars(it.text, f"{where}.text", s.max_text_chars)
                payload["text"] = it.text
            elif it.image is not None:
                payload["name"] = it.image.name
            ids.append(it.id)
            payloads.append(payload)
        if len(set(ids)) != len(ids):
            raise InvalidInput("the same item id appears twice in one request")
        pixels = None
        if images:
            decoded = self.pipeline.load_images([image for _, image in images])
            if info.meta.get("thumbnails"):
                for (n, _), img in zip(images, decoded):
                    payloads[n][PAYLOAD_KEY] = make_thumbnail(img)
            pixels = self.pipeline.pixels(decoded)
        return info, ids, payloads, pixels

    async def search(self, name: str, text: str | None = None, image: RawImage | None = None,
                     vector: Sequence[float] | None = None, k: int = 10, filter: dict | None = None,
                     like: str | None = None) -> dict:
        """`like`: an item id of the collection ("more like this"): its stored vector is the query, and the item
        itself is left out of the results."""
        info, query, kk, flt = await anyio.to_thread.run_sync(self._query, name, text, image, vector, k, filter, like)
        if text is not None:
            query = await self.pipeline.encode_texts([str(text)])
        elif image is not None:
            query = await self.pipeline.encode_pixels(query)
        hits = await anyio.to_thread.run_sync(functools.partial(
            self.store.search, info.name, np.asarray(query, np.float32), kk, filter=flt,
            exclude=[like] if isinstance(like, str) else []))
        return {"collection": name, "model": self.model_id,
                "results": [self._item(h.id, h.payload, score=h.score) for h in hits[0]]}

    def _query(self, name: str, text: str | None, image: RawImage | None, vector: Sequence[float] | None,
               k: int, filter: dict | None, like: str | None) -> tuple[CollectionInfo, np.ndarray, int, dict | None]:
        """The collection, the query (the pixels of an image; nothing yet for a text), k and the store filter:
        all checked (blocking: for a worker thread)."""
        s = self.settings
        info = self._usable(name)
        if sum(x is not None for x in (text, image, vector, like)) != 1:
            raise InvalidInput("give exactly one of 'text', 'image', 'vector' or 'like' to search by")
        check_at_most(k, s.max_collection_k, f"k={k}")
        flt = {f"metadata.{key}": v for key, v in (filter or {}).items()} if isinstance(filter, dict) else filter
        check_filter(flt)
        if text is not None:
            check_chars(text, "text", s.max_text_chars)
            query = np.zeros((0, self.dim), np.float32)  # encoded by the caller, on the loop
        elif image is not None:
            query = self.pipeline.images_pixels([image])
        elif like is not None:
            stored = self.store.vectors(info.name, [like]).get(like)
            if stored is None:
                raise NotFound(f"unknown item id {like!r} in collection {name!r}")
            query = np.asarray([stored], np.float32)
        elif vector is not None:
            if len(vector) != self.dim:  # numbers: the schema's
                raise InvalidInput(f"vector must be a list of {self.dim} numbers")
            query = np.asarray([vector], np.float32)
            if not np.isfinite(query).all() or not np.linalg.norm(query):
                raise InvalidInput("vector must be finite and non-zero")
        return info, query, k, flt

    @staticmethod
    def _item(item_id: str, payload: dict, score: float | None = None) -> dict:
        out: dict = {"id": item_id}
        if score is not None:
            out["score"] = score
        out["kind"] = payload.get("kind")
        if "text" in payload:
            out["text"] = payload["text"]
        if "name" in payload:
            out["name"] = payload["name"]
        out["metadata"] = payload.get("metadata", {})
        if PAYLOAD_KEY in payload:  # the JPEG itself only from thumbnail()
            out["thumbnail"] = True
        return out

    def _stored(self, name: str, item_id: str) -> tuple[CollectionInfo, Record]:
        """The collection and the item's stored record; NotFound naming whichever is absent."""
        info = self.store.collection(PREFIX + check_name(name))
        if info is None:
            raise NotFound(f"unknown collection {name!r}")
        rec = self.store.get(info.name, [item_id]).get(item_id)
        if rec is None:
            raise NotFound(f"unknown item id {item_id!r} in collection {name!r}")
        return info, rec

    @in_thread
    def get_item(self, name: str, item_id: str) -> dict:
        _, rec = self._stored(name, item_id)
        return self._item(rec.id, rec.payload)

    @in_thread
    def thumbnail(self, name: str, item_id: str) -> bytes:
        """The item's JPEG thumbnail; NotFound when the collection, the item or its thumbnail is absent."""
        info, rec = self._stored(name, item_id)
        data = thumbnail_bytes(rec.payload)
        if data is None:
            why = ("it is a text item" if rec.payload.get("kind") == "text" else
                   "the collection was created without thumbnails" if not info.meta.get("thumbnails") else
                   "it was stored without one")
            raise NotFound(f"item {item_id!r} of collection {name!r} has no thumbnail: {why}")
        return data

    @in_thread
    def delete_item(self, name: str, item_id: str) -> dict:
        info = self.store.collection(PREFIX + check_name(name))
        if info is None:
            raise NotFound(f"unknown collection {name!r}")
        if not self.store.delete(info.name, [item_id]):
            raise NotFound(f"unknown item id {item_id!r} in collection {name!r}")
        return {"deleted": item_id, "count": self.store.count(info.name)}


async def _nothing() -> np.ndarray:
    return np.zeros((0, 0), np.float32)
