"""BentoML services: thin HTTP glue over `ClipPipeline` (service/pipeline.py) and `Recommender`
(service/recommender.py).

Three services run in one bento:
- `ClipEncoderService` holds the model. Concurrent `encode_pixels` (and `encode_texts`) calls are merged by
  zest's `GreedyBatcher` (service/batching.py): a call that finds the model idle runs at once, alone; calls
  that arrive while it is busy run together as one forward pass when it frees.
- `RecommenderService` holds the ZESRec model and the persistent item catalogue. It runs as a
  single worker so the catalogue has one writer.
- `Zest` is the public API. It decodes, validates and preprocesses requests, keeps the
  class-embedding cache, and calls the other two through `bentoml.depends`.

How the services call each other, retry and report health: service/transport.py. Exceptions to
responses: service/errors.py. Time limits on clients: service/http_limits.py. SIGTERM, and a model that
cannot load: service/lifecycle.py. API keys: service/auth.py. The OpenAPI document (/docs.json, Swagger
at /): service/openapi.py. The OpenAI-compatible /v1 endpoints: service/openai_api.py.
Serve: `bentoml serve zest.service.app:Zest` (settings: service/settings.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import threading
import time
from typing import Any

import anyio
import bentoml
import numpy as np
import torch
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI, Request, Response

from .. import __version__
from ..models.errors import InvalidInput, ModelLoadError, Unavailable
from ..models.spec import bento_tag
from . import errors, openai_api, openapi
from .auth import ApiKeyMiddleware, load_api_keys
from .batching import GreedyBatcher
from .http_input import MULTIPART, json_images, parse_model, read_images_and_fields, read_json, read_multipart
from .http_limits import BodyTimeoutMiddleware, install_header_timeout, release_request_timers
from .image import bento_image
from .lifecycle import fail_start, install_drain
from .metrics import observe_batch
from .pipeline import ClipPipeline, EncoderInfo
from .recommender import NO_MODEL, has_model
from .schemas import (
    ClassifyRequest,
    ClassifyResponse,
    CollectionCreateRequest,
    CollectionDroppedResponse,
    CollectionHit,
    CollectionInfoResponse,
    CollectionItemDeletedResponse,
    CollectionItemsRequest,
    CollectionItemsResponse,
    CollectionSearchRequest,
    CollectionSearchResponse,
    CollectionsResponse,
    EmbedImageRequest,
    EmbedResponse,
    EmbedTextRequest,
    HeadsResponse,
    ItemDeletedResponse,
    ItemIn,
    ItemResponse,
    ItemsRequest,
    ItemsResponse,
    OpenAIEmbeddingsResponse,
    OpenAIModel,
    OpenAIModelsResponse,
    RecommendRequest,
    RecommendResponse,
    TemplateSetInfo,
    TemplatesResponse,
)
from .settings import Settings
from .transport import RUNNER_CONNECTION, Dependencies, Dependency

log = logging.getLogger("zest")
if log.level == logging.NOTSET:  # BentoML's server logging shows WARNING and up from other loggers
    log.setLevel(logging.INFO)   # zest's start-up, health and shutdown lines are INFO
SETTINGS = Settings.from_env()
API_KEYS = load_api_keys(SETTINGS.api_keys)
release_request_timers()  # every service's worker: BentoML's request timeout kept each request for 300 s
RESOURCES: dict[str, Any] = {"gpu": SETTINGS.gpus} if SETTINGS.gpus else {"cpu": "1"}


PUBLIC_SERVICE = "zest"
# On the model services (the callees): their callers' BentoML client keeps one connection session for
# good instead of closing it under running calls every 100 calls / 300 s. Why: service/transport.py.
CALLEE = {"traffic": {"timeout": SETTINGS.timeout_s}, "runner_connection": RUNNER_CONNECTION}


@bentoml.service(name="zest-clip-encoder", resources=RESOURCES, workers=1, **CALLEE)
class ClipEncoderService:
    """The model, loaded once per worker process; concurrent calls merged by a GreedyBatcher."""

    if bento_tag(SETTINGS.model):
        # A BentoML model tag (`zest models import` prints it), as a class attribute: `bentoml build` packs
        # the model into the bento, and its container serves it with no network.
        model_ref = bentoml.models.BentoModel(bento_tag(SETTINGS.model))

    def __init__(self) -> None:
        from ..models.clip_encoder import ClipEncoder

        s = SETTINGS
        install_drain("zest-clip-encoder", s.shutdown_timeout_s, public_service=PUBLIC_SERVICE)
        # A tag loads from the model store that `model_ref` resolves in (the bento's own, in a container).
        try:
            self.encoder = ClipEncoder.from_spec(s.model, device=s.device, precision=s.precision,
                                                 batch_size=s.batch_size, runtime=s.runtime,
                                                 cache_dir=os.path.join(os.path.expanduser(s.data_dir), "runtimes"))
        except Exception as exc:  # noqa: BLE001 - stop the server, do not respawn into the same failure
            fail_start("zest-clip-encoder", exc)
        # One model, two queues: image and text calls merge separately, and the lock runs one forward pass at a
        # time (a pass already uses every core: torch's intra-op threads).
        model_lock = threading.Lock()

        def locked(fn):
            def run(batch):
                with model_lock:
                    return fn(batch)
            return run

        self.pixel_batcher = GreedyBatcher(locked(self.encoder.encode_pixels), s.max_batch_size, "pixels",
                                           on_batch=lambda requests, items: observe_batch("pixels", requests, items))
        self.text_batcher = GreedyBatcher(locked(self.encoder.encode_texts), max(s.max_batch_size, s.max_texts), "texts",
                                          on_batch=lambda requests, items: observe_batch("texts", requests, items))
        # usage.prompt_tokens of /v1/embeddings: a tokenizer of its own, so counting never waits for the model
        # (and a Hugging Face tokenizer is never used by two threads at once)
        self.counting_tokenizer = copy.deepcopy(self.encoder.tokenizer)
        self.counting_lock = threading.Lock()
        log.info("loaded %s on %s (dim %d, runtime %s, %d torch threads)", self.encoder.model_id, self.encoder.device,
                 self.encoder.dim, self.encoder.runtime, torch.get_num_threads())

    @bentoml.api
    def info(self) -> dict:
        e = EncoderInfo.of(self.encoder)
        return {"model_id": e.model_id, "dim": e.dim, "logit_scale": e.logit_scale,
                "context_length": e.context_length, "preprocess_cfg": e.preprocess_cfg}

    @bentoml.api
    async def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return await self.pixel_batcher.run(pixels) if len(pixels) else self.encoder.encode_pixels(pixels)

    @bentoml.api
    async def encode_texts(self, texts: list[str]) -> np.ndarray:
        return await self.text_batcher.run(texts) if texts else self.encoder.encode_texts(texts)

    @bentoml.api
    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the text tower reads per text: its tokenizer, truncated to its context, start/end included."""
        from ..models.text_tower import content_lengths, pad_token_id

        if not texts:
            return []
        with self.counting_lock:
            tokens = self.counting_tokenizer(texts)
        return content_lengths(tokens, pad_token_id(self.counting_tokenizer)).tolist()


@bentoml.service(name="zest-recommender", workers=SETTINGS.rec_workers, **CALLEE)
class RecommenderService:
    """ZESRec model + item catalogue. One worker on the embedded store (its single writer); with a shared
    Milvus store ZEST_REC_WORKERS may be more (settings.py refuses more workers on a single-writer store).
    A user error (unknown item id, a limit) leaves as a 4xx that `Zest` raises again (service/errors.py)."""

    if SETTINGS.rec_model and not os.path.isdir(SETTINGS.rec_model):
        # A BentoML model tag, as a class attribute: `bentoml build` packs the model into the bento.
        model_ref = bentoml.models.BentoModel(SETTINGS.rec_model)

    def __init__(self) -> None:
        from .recommender import build_recommender, has_model, shipped_model_dir

        install_drain("zest-recommender", SETTINGS.shutdown_timeout_s, public_service=PUBLIC_SERVICE)
        errors.hide_callee_user_errors()
        ref = getattr(self, "model_ref", None)
        if ref is not None:
            model_dir, model_id = ref.path, str(ref.tag)
        elif SETTINGS.rec_model:
            model_dir, model_id = SETTINGS.rec_model, f"local-dir:{os.path.abspath(SETTINGS.rec_model)}"
        else:
            model_dir, model_id = shipped_model_dir(), "zesrec-ml-latest-small"
        self.rec = None
        if not has_model(SETTINGS):
            # No model shipped in this checkout and none configured: the CLIP endpoints still serve.
            log.warning("no recommender model at %s; /items and /recommend answer 503 until one is "
                        "configured (zest rec train, then ZEST_REC_MODEL)", model_dir)
            return
        try:
            self.rec = build_recommender(model_dir, model_id, SETTINGS)
        except Exception as exc:  # noqa: BLE001 - stop the server, do not respawn into the same failure
            fail_start("zest-recommender", exc)
        log.info("recommender %s ready with %d items", model_id, len(self.rec.catalog))

    def _recommender(self):
        if self.rec is None:  # `Zest` answers 503 itself without a model (recommender.has_model)
            raise ServiceUnavailable(NO_MODEL)
        return self.rec

    @bentoml.api
    def upsert_items(self, items: list[ItemIn]) -> ItemsResponse:
        with errors.user_errors_to_caller():
            return ItemsResponse(**self._recommender().upsert([i.model_dump() for i in items]))

    @bentoml.api
    def get_item(self, item_id: str) -> ItemResponse:
        with errors.user_errors_to_caller():
            return ItemResponse(**self._recommender().get(item_id))

    @bentoml.api
    def delete_item(self, item_id: str) -> ItemDeletedResponse:
        with errors.user_errors_to_caller():
            return ItemDeletedResponse(**self._recommender().delete(item_id))

    @bentoml.api
    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        with errors.user_errors_to_caller():
            return RecommendResponse(**self._recommender().recommend(**request.model_dump()))


# The one spec is FastAPI's, at BentoML's /docs.json (its Swagger UI at / reads it): service/openapi.py.
app = FastAPI(title="zest", version=__version__, openapi_url="/docs.json", docs_url=None, redoc_url=None,
              description="Zero-shot image classification, CLIP embeddings (also OpenAI-compatible, /v1), "
                          "collections of stored embeddings and cold-start recommendations. Every error is "
                          '`{"error": "..."}`.')


errors.register(app)
app.add_middleware(BodyTimeoutMiddleware, read_timeout_s=SETTINGS.body_read_timeout_s,
                   total_timeout_s=SETTINGS.body_timeout_s)
INFO_DEADLINE_S = 10.0  # the encoder's `info` is instant when it is up: a longer wait means it is not


def _only(fields: dict, allowed: set[str]) -> dict:
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}; expected: {', '.join(sorted(allowed))}")
    return fields


def _declare_heads(cls):
    """Each ZEST_HEADS entry that is not a head directory is a BentoML model tag, declared as a class attribute
    (`head_model_<i>`) so that `bentoml build` packs it, like RecommenderService.model_ref."""
    from ..models.heads import is_head_path

    for i, entry in enumerate(SETTINGS.heads):
        if not is_head_path(entry):
            setattr(cls, f"head_model_{i}", bentoml.models.BentoModel(entry))
    return cls


def _load_heads(service):
    """The heads of ZEST_HEADS (models.heads.Heads); ModelLoadError, naming the entry, if one is missing."""
    from ..models.heads import load_heads

    sources = []
    for i, entry in enumerate(SETTINGS.heads):
        ref = getattr(service, f"head_model_{i}", None)
        if ref is None:
            sources.append((entry, f"local-dir:{os.path.abspath(entry)}"))
            continue
        try:  # served, BentoML has resolved the BentoModel into the stored model (its latest version)
            sources.append((ref.path, str(ref.tag)))
        except Exception as exc:
            raise ModelLoadError(f"ZEST_HEADS: no head {entry!r} in the BentoML model store ({exc}): make it with "
                                 "`zest adapt DIR --name NAME`, or give a head directory") from exc
    heads = load_heads(sources)
    for head in heads:
        log.info("head %s (%s, %d classes) from %s", head.name, head.method, len(head.classes), head.source)
    return heads


# -- collections: image/text search over stored CLIP embeddings --------------------------------------
def _json_field(fields: dict, key: str, default=None):
    """A multipart text field holding JSON (ids, metadata, filter)."""
    if key not in fields:
        return default
    try:
        return json.loads(fields[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"field {key!r} is not valid JSON ({exc})") from None


def _collection_items(raw: list, fields: dict) -> list:
    """Multipart: files in `images`; optional `ids` (JSON list, default the file names) and `metadata`
    (a JSON object for every file, or a JSON list with one object per file)."""
    from .collections import NewItem

    _only(fields, {"ids", "metadata"})
    ids = _json_field(fields, "ids", [r.name for r in raw])
    metadata = _json_field(fields, "metadata", {})
    if not isinstance(ids, list) or len(ids) != len(raw):
        raise InvalidInput(f"ids must be a JSON list with one id per image ({len(raw)})")
    if isinstance(metadata, list):
        if len(metadata) != len(raw):
            raise InvalidInput(f"metadata must be one JSON object, or a list with one per image ({len(raw)})")
    else:
        metadata = [metadata] * len(raw)
    return [NewItem(id=i, image=r, metadata=m) for i, r, m in zip(ids, raw, metadata)]


# runner_probe off: BentoML's own dependency check in /readyz waits up to 5 s per service and answers 500
# when one refuses connections; `Zest.__is_ready__` checks them instead, within ZEST_PROBE_TIMEOUT_S.
@bentoml.service(name=PUBLIC_SERVICE, image=bento_image(), traffic={"timeout": SETTINGS.timeout_s},
                 runner_probe={"enabled": False, "timeout": 1, "period": 10})
@bentoml.asgi_app(app, path="/")
@_declare_heads
class Zest:
    """The public REST API."""

    encoder = bentoml.depends(ClipEncoderService)
    recommender = bentoml.depends(RecommenderService)

    def __init__(self) -> None:
        s = self.settings = SETTINGS
        self.loaded_heads = _load_heads(self)
        self._started = int(time.time())
        self._pipeline: ClipPipeline | None = None
        self._pipeline_lock = asyncio.Lock()
        self._collections = None
        self._collections_lock = asyncio.Lock()
        self._stopping = False
        self.enc = Dependency("zest-clip-encoder", self.encoder, s.probe_timeout_s)
        self.rec = Dependency("zest-recommender", self.recommender, s.probe_timeout_s)
        self.has_rec_model = has_model(s)  # without one, /items and /recommend answer 503 here
        self.deps = Dependencies([self.enc, self.rec])
        install_header_timeout(s.header_timeout_s)  # this worker's uvicorn, before it accepts anything
        install_drain(PUBLIC_SERVICE, s.shutdown_timeout_s, on_term=self._on_term)
        log.info(API_KEYS.describe())

    async def pipeline(self) -> ClipPipeline:
        """Built on first use: it needs the encoder service's model info, which may start after us."""
        if self._pipeline is None:
            async with self._pipeline_lock:
                if self._pipeline is None:
                    info = await self.enc.call("info", idempotent=True, deadline_s=INFO_DEADLINE_S)
                    self._pipeline = ClipPipeline(self.settings, EncoderInfo(**info),
                                                  self.enc.sync("encode_pixels", idempotent=True),
                                                  self.enc.sync("encode_texts", idempotent=True),
                                                  heads=self.loaded_heads)
                    for head in self.loaded_heads:
                        if head.model_id != info["model_id"]:
                            log.warning("head %s was made for model %s, not %s: /classify refuses it (409)",
                                        head.name, head.model_id, info["model_id"])
        return self._pipeline

    async def __is_ready__(self) -> bool:
        """/readyz: every model service answers its probe and the pipeline is built. Never takes much
        longer than ZEST_PROBE_TIMEOUT_S: a service that is down, restarting or loading makes it 503."""
        if self._stopping:
            return False
        try:
            if not await self.deps.ready():
                return False
            await asyncio.wait_for(self.pipeline(), self.settings.probe_timeout_s)
            return True
        except Exception:  # noqa: BLE001 - not ready, whatever the reason; the calls path logs failures
            return False

    async def __is_alive__(self) -> bool:
        """/livez: False once a model service that was up has not answered for ZEST_LIVENESS_GRACE_S —
        it is not coming back by itself (e.g. a worker that crashes while loading, again and again), so
        this process can no longer serve and the orchestrator should restart it."""
        dead = await self.deps.dead(self.settings.liveness_grace_s)
        if dead:
            log.error("not live: %s down for more than %.0f s", ", ".join(dead), self.settings.liveness_grace_s)
        return not dead

    async def _on_term(self) -> None:
        self._stopping = True
        down = self.deps.stopping()
        if down:
            log.error("stopping with no worker left for %s: requests waiting on it answer 503 now",
                      ", ".join(down))

    @bentoml.on_shutdown
    async def _close_probes(self) -> None:
        await self.deps.close()

    async def _run(self, fn, *args):
        pipeline = await self.pipeline()
        return await anyio.to_thread.run_sync(fn, pipeline, *args)

    async def _respond(self, fn, *args) -> Response:
        """`_run`, and the pydantic result serialised in the same worker thread by pydantic's own JSON encoder.
        FastAPI's response_model path (validate again, to Python, json.dumps) costs ~25x more: 48 ms for 32
        embeddings of 512 floats against 1.8 ms. The route's response_model still states the schema."""
        pipeline = await self.pipeline()
        body = await anyio.to_thread.run_sync(lambda: fn(pipeline, *args).model_dump_json().encode())
        return Response(body, media_type="application/json")

    @app.post("/classify", response_model=ClassifyResponse)
    async def classify(self, request: Request):
        """Classify images zero-shot (`labels`, `templates`) or with an adapted head (`head`): multipart
        (`images` files + the other fields) or JSON; `top_k` labels per image."""
        raw, fields = await read_images_and_fields(request, self.settings, ClassifyRequest)
        if isinstance(fields, dict):
            fields = _only(fields, {"labels", "templates", "top_k", "head"})
            labels, templates, top_k = fields.get("labels"), fields.get("templates"), fields.get("top_k", 5)
            head = fields.get("head")
        else:
            labels, templates, top_k, head = fields.labels, fields.templates, fields.top_k, fields.head
        return await self._respond(lambda p: p.classify(raw, labels, templates, top_k, head=head))

    @app.get("/heads", response_model=HeadsResponse)
    async def list_heads(self):
        """The adapted heads loaded (ZEST_HEADS): classes, the model each was made for, held-out metrics."""
        return await self._respond(lambda p: p.list_heads())

    @app.post("/embed/image", response_model=EmbedResponse)
    async def embed_image(self, request: Request):
        """L2-normalised image embeddings: multipart `images` files, or JSON {"images": [...]}."""
        raw, fields = await read_images_and_fields(request, self.settings, EmbedImageRequest)
        if isinstance(fields, dict):
            _only(fields, set())
        return await self._respond(lambda p: p.embed_images(raw))

    @app.post("/embed/text", response_model=EmbedResponse)
    async def embed_text(self, request: Request):
        """L2-normalised text embeddings: JSON {"texts": [...]}; long texts are truncated like CLIP does."""
        body = parse_model(EmbedTextRequest, await read_json(request, self.settings))
        return await self._respond(lambda p: p.embed_texts(body.texts))

    @app.get("/templates", response_model=TemplatesResponse)
    def templates(self):
        """The shipped prompt template sets."""
        from ..prompts import list_template_sets

        return TemplatesResponse(template_sets=[
            TemplateSetInfo(name=s.name, description=s.description, templates=list(s.templates))
            for s in list_template_sets()
        ])

    # -- recommender ----------------------------------------------------------------------
    async def _rec(self, method: str, *args):
        """Call the recommender service; its user errors come back raised, with their status (transport.py)."""
        if not self.has_rec_model:
            raise Unavailable(NO_MODEL)
        # An upsert by id, a read or a ranking can be sent again; a delete is not: never repeated.
        return await self.rec.call(method, *args, idempotent=method != "delete_item")

    @app.post("/items", response_model=ItemsResponse)
    async def upsert_items(self, request: Request):
        """Insert or update items: {"items": [{"id": ..., "text": ...}]}. Embedded on write, persisted."""
        body = parse_model(ItemsRequest, await read_json(request, self.settings))
        return await self._rec("upsert_items", body.items)

    @app.get("/items/{item_id}", response_model=ItemResponse)
    async def get_item(self, item_id: str):
        return await self._rec("get_item", item_id)

    @app.delete("/items/{item_id}", response_model=ItemDeletedResponse)
    async def delete_item(self, item_id: str):
        return await self._rec("delete_item", item_id)

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, request: Request):
        """Top-k items for a history of item ids and/or free-text descriptions of liked items."""
        body = parse_model(RecommendRequest, await read_json(request, self.settings))
        return await self._rec("recommend", body)

    # -- collections: image/text search over stored CLIP embeddings (service/collections.py) ----------
    # Served by the public service itself: it holds the pipeline (decoding, preprocessing, the encoder
    # service's batched calls); the store is ZEST_VECTOR_STORE's "collections" role.
    async def collections(self):
        """The collections logic, built on first use (it needs the encoder's model info, like pipeline())."""
        if self._collections is None:
            pipeline = await self.pipeline()
            async with self._collections_lock:
                if self._collections is None:
                    from .collections import Collections
                    from .recommender import open_store_for

                    store = await anyio.to_thread.run_sync(open_store_for, self.settings, "collections")
                    self._collections = Collections(store, pipeline, self.settings)
        return self._collections

    async def _in_collections(self, fn):
        coll = await self.collections()
        return await anyio.to_thread.run_sync(fn, coll)

    @app.post("/collections", response_model=CollectionInfoResponse)
    async def create_collection(self, request: Request):
        """Create a collection for this server's CLIP model: {"name": ..., "model": optional}."""
        body = parse_model(CollectionCreateRequest, await read_json(request, self.settings))
        return await self._in_collections(lambda c: c.create(body.name, body.model))

    @app.get("/collections", response_model=CollectionsResponse)
    async def list_collections(self):
        return await self._in_collections(lambda c: c.list())

    @app.get("/collections/{name}", response_model=CollectionInfoResponse)
    async def describe_collection(self, name: str):
        return await self._in_collections(lambda c: c.describe(name))

    @app.delete("/collections/{name}", response_model=CollectionDroppedResponse)
    async def drop_collection(self, name: str):
        return await self._in_collections(lambda c: c.drop(name))

    @app.post("/collections/{name}/items", response_model=CollectionItemsResponse)
    async def add_collection_items(self, name: str, request: Request):
        """Add or replace items, embedded on write: multipart `images` files (+ `ids`, `metadata`), or JSON
        {"items": [{"id", "text" | "image", "metadata"}]}."""
        from .collections import NewItem

        if request.headers.get("content-type", "").split(";")[0].strip() == MULTIPART:
            raw, fields = await read_multipart(request, self.settings)
            items = _collection_items(raw, fields)
        else:
            body = parse_model(CollectionItemsRequest, await read_json(request, self.settings, multipart_too=True))
            items = []
            for n, it in enumerate(body.items):
                image = json_images([it.image])[0] if it.image is not None else None
                if image is not None and image.name == "image[0]":
                    image.name = f"items[{n}].image"
                items.append(NewItem(id=it.id, text=it.text, image=image, metadata=it.metadata))
        return await self._in_collections(lambda c: c.add(name, items))

    @app.post("/collections/{name}/search", response_model=CollectionSearchResponse)
    async def search_collection(self, name: str, request: Request):
        """Top-k items by text, image or vector: JSON {"text" | "image" | "vector", "k", "filter"}, or multipart
        with one file in `images` (+ `k`, `filter`)."""
        if request.headers.get("content-type", "").split(";")[0].strip() == MULTIPART:
            raw, fields = await read_multipart(request, self.settings)
            _only(fields, {"k", "filter"})
            if len(raw) != 1:
                raise InvalidInput("send exactly one image file in 'images' to search by")
            k = _json_field(fields, "k", 10)
            flt = _json_field(fields, "filter")
            return await self._in_collections(lambda c: c.search(name, image=raw[0], k=k, filter=flt))
        body = parse_model(CollectionSearchRequest, await read_json(request, self.settings, multipart_too=True))
        image = json_images([body.image])[0] if body.image is not None else None
        return await self._in_collections(
            lambda c: c.search(name, text=body.text, image=image, vector=body.vector, k=body.k, filter=body.filter))

    @app.get("/collections/{name}/items/{item_id:path}", response_model=CollectionHit, response_model_exclude_none=True)
    async def get_collection_item(self, name: str, item_id: str):
        return await self._in_collections(lambda c: c.get_item(name, item_id))

    @app.delete("/collections/{name}/items/{item_id:path}", response_model=CollectionItemDeletedResponse)
    async def delete_collection_item(self, name: str, item_id: str):
        return await self._in_collections(lambda c: c.delete_item(name, item_id))

    # -- OpenAI-compatible embeddings (service/openai_api.py) --------------------------------------------
    @app.post("/v1/embeddings", response_model=OpenAIEmbeddingsResponse)
    async def openai_embeddings(self, request: Request):
        """OpenAI's embeddings API: `input` texts, or images with `"modality": "image"` (Infinity's extension);
        the vectors are /embed/text's and /embed/image's."""
        body, inputs = openai_api.parse_request(await read_json(request, self.settings))
        info = (await self.pipeline()).info
        openai_api.check_model(body.model, info.model_id)
        openai_api.check_dimensions(body.dimensions, info.model_id, info.dim)
        if body.modality == "image":
            raw = openai_api.image_inputs(inputs)
            result, tokens = await self._run(lambda p: p.embed_images(raw)), 0
        else:
            result = await self._run(lambda p: p.embed_texts(inputs))
            tokens = sum(await self.enc.call("count_tokens", inputs, idempotent=True))
        response = openai_api.response(result.embeddings, body.encoding_format, info.model_id, tokens)
        return Response(OpenAIEmbeddingsResponse(**response).model_dump_json(), media_type="application/json")

    @app.get("/v1/models", response_model=OpenAIModelsResponse)
    async def openai_models(self):
        """The model /v1/embeddings serves (the CLIP model this server runs)."""
        return openai_api.models_response((await self.pipeline()).info.model_id, self._started)

    @app.get("/v1/models/{model:path}", response_model=OpenAIModel)
    async def openai_model(self, model: str):
        served = (await self.pipeline()).info.model_id
        openai_api.check_model(model, served)
        return openai_api.models_response(served, self._started)["data"][0]


# Around the whole public service, BentoML's own routes included (first added = outermost): one error shape
# for every response, then the API-key check (service/auth.py).
Zest.add_asgi_middleware(errors.ErrorShapeMiddleware)
Zest.add_asgi_middleware(ApiKeyMiddleware, keys=API_KEYS)
openapi.install(app, keys_on=bool(API_KEYS))
