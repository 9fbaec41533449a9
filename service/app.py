"""BentoML services: thin HTTP glue over `ClipPipeline` (service/pipeline.py) and `Recommender`
(service/recommender.py).

Three services run in one bento:
- `ClipEncoderService` holds the model. Its `encode_pixels` API is *batchable*: concurrent requests
  are merged by BentoML's adaptive batching into one forward pass.
- `RecommenderService` holds the ZESRec model and the persistent item catalogue. It runs as a
  single worker so the catalogue has one writer.
- `Zest` is the public API. It decodes, validates and preprocesses requests, keeps the
  class-embedding cache, and calls the other two through `bentoml.depends`.

Serve: `bentoml serve zest.service.app:Zest` (settings: service/settings.py).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import aiohttp
import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..models.errors import InvalidInput, ModelLoadError, Unavailable, ZestError
from .image import bento_image
from .pipeline import ClipPipeline, EncoderInfo
from .requests import parse_model, read_images_and_fields, read_json
from .schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedImageRequest,
    EmbedResponse,
    EmbedTextRequest,
    HeadsResponse,
    ItemsRequest,
    RecommendRequest,
    TemplateSetInfo,
    TemplatesResponse,
)
from .settings import Settings

log = logging.getLogger("zest")
SETTINGS = Settings.from_env()
RESOURCES: dict[str, Any] = {"gpu": SETTINGS.gpus} if SETTINGS.gpus else {"cpu": "1"}


@bentoml.service(name="zest-clip-encoder", resources=RESOURCES, workers=1, traffic={"timeout": SETTINGS.timeout_s})
class ClipEncoderService:
    """The model, loaded once per worker process; batchable image encoding."""

    def __init__(self) -> None:
        from ..models.clip_encoder import ClipEncoder

        s = SETTINGS
        self.encoder = ClipEncoder.from_spec(s.model, device=s.device, precision=s.precision,
                                             batch_size=s.batch_size)
        log.info("loaded %s on %s (dim %d)", self.encoder.model_id, self.encoder.device, self.encoder.dim)

    @bentoml.api
    def info(self) -> dict:
        e = EncoderInfo.of(self.encoder)
        return {"model_id": e.model_id, "dim": e.dim, "logit_scale": e.logit_scale,
                "context_length": e.context_length, "preprocess_cfg": e.preprocess_cfg}

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=SETTINGS.max_batch_size,
                 max_latency_ms=SETTINGS.max_latency_ms)
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder.encode_pixels(pixels)

    @bentoml.api
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)


def _outcome(fn, *args, **kwargs) -> dict:
    """Run a Recommender call; user errors travel back as data (status + message), not as 500s."""
    try:
        return {"ok": fn(*args, **kwargs)}
    except ZestError as exc:
        if getattr(exc, "status_code", 500) >= 500:
            raise
        return {"error": str(exc), "status": exc.status_code}


@bentoml.service(name="zest-recommender", workers=1, traffic={"timeout": SETTINGS.timeout_s})
class RecommenderService:
    """ZESRec model + item catalogue. One worker: the catalogue's single writer."""

    if SETTINGS.rec_model and not os.path.isdir(SETTINGS.rec_model):
        # A BentoML model tag, as a class attribute: `bentoml build` packs the model into the bento.
        model_ref = bentoml.models.BentoModel(SETTINGS.rec_model)

    def __init__(self) -> None:
        from .recommender import build_recommender, shipped_model_dir

        ref = getattr(self, "model_ref", None)
        if ref is not None:
            model_dir, model_id = ref.path, str(ref.tag)
        elif SETTINGS.rec_model:
            model_dir, model_id = SETTINGS.rec_model, f"local-dir:{os.path.abspath(SETTINGS.rec_model)}"
        else:
            model_dir, model_id = shipped_model_dir(), "zesrec-ml-latest-small"
        self.rec = None
        if not SETTINGS.rec_model and not (model_dir / "model.safetensors").is_file():
            # No model shipped in this checkout and none configured: the CLIP endpoints still serve.
            log.warning("no recommender model at %s; /items and /recommend answer 503 until one is "
                        "configured (zest rec train, then ZEST_REC_MODEL)", model_dir)
            return
        self.rec = build_recommender(model_dir, model_id, SETTINGS)
        log.info("recommender %s ready with %d items", model_id, len(self.rec.catalog))

    def _call(self, method: str, *args, **kwargs) -> dict:
        if self.rec is None:
            return {"error": "no recommender model is configured: train one with `zest rec train` and set "
                             "ZEST_REC_MODEL", "status": 503}
        return _outcome(getattr(self.rec, method), *args, **kwargs)

    @bentoml.api
    def upsert_items(self, items: list) -> dict:
        return self._call("upsert", items)

    @bentoml.api
    def get_item(self, item_id: str) -> dict:
        return self._call("get", item_id)

    @bentoml.api
    def delete_item(self, item_id: str) -> dict:
        return self._call("delete", item_id)

    @bentoml.api
    def recommend(self, request: dict) -> dict:
        return self._call("recommend", **request)


def _unwrap(outcome: dict):
    if "error" in outcome:
        error = Unavailable(outcome["error"]) if outcome["status"] == 503 else InvalidInput(outcome["error"])
        error.status_code = outcome["status"]
        raise error
    return outcome["ok"]


app = FastAPI(title="zest", description="Zero-shot image classification and embeddings with CLIP.")


# Calls between services reuse keep-alive connections; one the callee is just closing fails with a
# connection error before the request is handled. Idempotent calls are retried; if the callee is
# really down the client gets a 503, never a 500.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError,)
_ATTEMPTS = 3


def _retrying(fn):
    def call(*args, **kwargs):
        for attempt in range(_ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except _CONNECTION_ERRORS as exc:
                if attempt == _ATTEMPTS - 1:
                    raise
                log.warning("retrying %s after %s", getattr(fn, "__name__", fn), type(exc).__name__)
    return call


async def _retrying_async(fn, *args):
    for attempt in range(_ATTEMPTS):
        try:
            return await fn(*args)
        except _CONNECTION_ERRORS as exc:
            if attempt == _ATTEMPTS - 1:
                raise
            log.warning("retrying %s after %s", getattr(fn, "__name__", fn), type(exc).__name__)


@app.exception_handler(aiohttp.ClientConnectionError)
async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal service unreachable: %s", exc)
    return JSONResponse({"error": "a model service is unavailable; retry shortly"}, status_code=503)


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"error": "internal error; see the server log"}, status_code=500)


@app.exception_handler(ZestError)
async def _zest_error(request: Request, exc: ZestError) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    if status >= 500 and not isinstance(exc, Unavailable):
        log.exception("request failed", exc_info=exc)
        return JSONResponse({"error": "internal error; see the server log"}, status_code=status)
    return JSONResponse({"error": str(exc)}, status_code=status)


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


@bentoml.service(name="zest", image=bento_image(), traffic={"timeout": SETTINGS.timeout_s})
@bentoml.asgi_app(app, path="/")
@_declare_heads
class Zest:
    """The public REST API."""

    encoder = bentoml.depends(ClipEncoderService)
    recommender = bentoml.depends(RecommenderService)

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.loaded_heads = _load_heads(self)
        self._pipeline: ClipPipeline | None = None
        self._lock = threading.Lock()

    def pipeline(self) -> ClipPipeline:
        """Built on first use: it needs the encoder service's model info, which may start after us."""
        with self._lock:
            if self._pipeline is None:
                info = EncoderInfo(**_retrying(self.encoder.info)())
                self._pipeline = ClipPipeline(self.settings, info, _retrying(self.encoder.encode_pixels),
                                              _retrying(self.encoder.encode_texts), heads=self.loaded_heads)
                for head in self.loaded_heads:
                    if head.model_id != info.model_id:
                        log.warning("head %s was made for model %s, not %s: /classify refuses it (409)",
                                    head.name, head.model_id, info.model_id)
            return self._pipeline

    def __is_ready__(self) -> bool:
        try:
            self.pipeline()
            return True
        except Exception:  # encoder not up yet
            return False

    async def _run(self, fn, *args):
        pipeline = await anyio.to_thread.run_sync(self.pipeline)
        return await anyio.to_thread.run_sync(fn, pipeline, *args)

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
        return await self._run(lambda p: p.classify(raw, labels, templates, top_k, head=head))

    @app.get("/heads", response_model=HeadsResponse)
    async def list_heads(self):
        """The adapted heads loaded (ZEST_HEADS): classes, the model each was made for, held-out metrics."""
        return await self._run(lambda p: p.list_heads())

    @app.post("/embed/image", response_model=EmbedResponse)
    async def embed_image(self, request: Request):
        """L2-normalised image embeddings: multipart `images` files, or JSON {"images": [...]}."""
        raw, fields = await read_images_and_fields(request, self.settings, EmbedImageRequest)
        if isinstance(fields, dict):
            _only(fields, set())
        return await self._run(lambda p: p.embed_images(raw))

    @app.post("/embed/text", response_model=EmbedResponse)
    async def embed_text(self, request: Request):
        """L2-normalised text embeddings: JSON {"texts": [...]}; long texts are truncated like CLIP does."""
        body = parse_model(EmbedTextRequest, await read_json(request, self.settings))
        return await self._run(lambda p: p.embed_texts(body.texts))

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
        call = getattr(self.recommender.to_async, method)
        if method == "delete_item":  # not idempotent: never repeated
            return _unwrap(await call(*args))
        return _unwrap(await _retrying_async(call, *args))

    @app.post("/items")
    async def upsert_items(self, request: Request):
        """Insert or update items: {"items": [{"id": ..., "text": ...}]}. Embedded on write, persisted."""
        body = parse_model(ItemsRequest, await read_json(request, self.settings))
        return await self._rec("upsert_items", [i.model_dump() for i in body.items])

    @app.get("/items/{item_id}")
    async def get_item(self, item_id: str):
        return await self._rec("get_item", item_id)

    @app.delete("/items/{item_id}")
    async def delete_item(self, item_id: str):
        return await self._rec("delete_item", item_id)

    @app.post("/recommend")
    async def recommend(self, request: Request):
        """Top-k items for a history of item ids and/or free-text descriptions of liked items."""
        body = parse_model(RecommendRequest, await read_json(request, self.settings))
        return await self._rec("recommend", body.model_dump())
