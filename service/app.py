"""BentoML services: thin HTTP glue over `ClipPipeline` (service/pipeline.py).

Two services run in one bento:
- `ClipEncoderService` holds the model. Its `encode_pixels` API is *batchable*: concurrent requests
  are merged by BentoML's adaptive batching into one forward pass.
- `Zest` is the public API. It decodes, validates and preprocesses requests, keeps the
  class-embedding cache, and calls the encoder through `bentoml.depends`.

Serve: `bentoml serve service.app:Zest` (settings: service/settings.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from models.errors import InvalidInput, ZestError
from service.pipeline import ClipPipeline, EncoderInfo
from service.requests import parse_model, read_images_and_fields, read_json
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedImageRequest,
    EmbedResponse,
    EmbedTextRequest,
    TemplateSetInfo,
    TemplatesResponse,
)
from service.settings import Settings

log = logging.getLogger("zest")
SETTINGS = Settings.from_env()
RESOURCES: dict[str, Any] = {"gpu": SETTINGS.gpus} if SETTINGS.gpus else {"cpu": "1"}


@bentoml.service(name="zest-clip-encoder", resources=RESOURCES, workers=1, traffic={"timeout": 300})
class ClipEncoderService:
    """The model, loaded once per worker process; batchable image encoding."""

    def __init__(self) -> None:
        from models.clip_encoder import ClipEncoder

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


app = FastAPI(title="zest", description="Zero-shot image classification and embeddings with CLIP.")


@app.exception_handler(ZestError)
async def _zest_error(request: Request, exc: ZestError) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    if status >= 500:
        log.exception("request failed", exc_info=exc)
        return JSONResponse({"error": "internal error; see the server log"}, status_code=status)
    return JSONResponse({"error": str(exc)}, status_code=status)


def _only(fields: dict, allowed: set[str]) -> dict:
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}; expected: {', '.join(sorted(allowed))}")
    return fields


@bentoml.service(name="zest", traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class Zest:
    """The public REST API."""

    encoder = bentoml.depends(ClipEncoderService)

    def __init__(self) -> None:
        self.settings = SETTINGS
        self._pipeline: ClipPipeline | None = None
        self._lock = threading.Lock()

    def pipeline(self) -> ClipPipeline:
        """Built on first use: it needs the encoder service's model info, which may start after us."""
        with self._lock:
            if self._pipeline is None:
                info = EncoderInfo(**self.encoder.info())
                self._pipeline = ClipPipeline(self.settings, info, self.encoder.encode_pixels,
                                              self.encoder.encode_texts)
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
        """Zero-shot classify images: multipart (`images` files + `labels`, `templates`, `top_k`) or JSON."""
        raw, fields = await read_images_and_fields(request, self.settings, ClassifyRequest)
        if isinstance(fields, dict):
            fields = _only(fields, {"labels", "templates", "top_k"})
            labels, templates, top_k = fields.get("labels"), fields.get("templates"), fields.get("top_k", 5)
            if labels is None:
                raise InvalidInput("labels is missing")
        else:
            labels, templates, top_k = fields.labels, fields.templates, fields.top_k
        return await self._run(lambda p: p.classify(raw, labels, templates, top_k))

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
        from prompts import list_template_sets

        return TemplatesResponse(template_sets=[
            TemplateSetInfo(name=s.name, description=s.description, templates=list(s.templates))
            for s in list_template_sets()
        ])
