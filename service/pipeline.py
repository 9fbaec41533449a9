"""Request-level logic of the CLIP endpoints, independent of HTTP and BentoML.

The service hands a `ClipPipeline` two awaitable callables — encode preprocessed pixels, encode texts —
which are the (request-merging) encoder service in production and a wrapped `ClipEncoder` in tests. The
endpoint methods run on the event loop and await the encoder there; blocking work (URL fetch, decode,
preprocess, the zero-shot product, building the response) runs in worker threads (`anyio.to_thread`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import numpy as np
from PIL import Image

from ..models.classifier import EncodeTexts, ZeroShotClassifier, check_threshold, clean_labels
from ..models.errors import InvalidInput
from ..models.heads import Heads
from ..models.images import decode_image, to_rgb
from ..models.limits import check_chars, check_count, check_inputs, check_k
from ..models.pil_transform import PilEvalTransform
from ..prompts import DEFAULT_SET, TemplateSet, load_template_set, user_template_set
from .fetch import fetch_image_bytes
from .metrics import observe_class_cache
from .schemas import (
    ClassifyResponse,
    EmbedResponse,
    HeadInfo,
    HeadsResponse,
    ImageResult,
    Prediction,
    TemplatesUsed,
)
from .settings import Settings

DEFAULT_TOP_K = 5

EncodePixels = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass
class RawImage:
    """An image as it arrived: bytes (upload/base64) or a URL."""

    name: str
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class EncoderInfo:
    model_id: str
    dim: int
    logit_scale: float
    context_length: int
    preprocess_cfg: dict
    runtime: str = ""  # what the encoder runs on, for GET /info
    device: str = ""
    logit_bias: float | None = None  # set for sigmoid-loss models (SigLIP): their scoring is per-label sigmoid

    @classmethod
    def of(cls, encoder) -> EncoderInfo:
        return cls(encoder.model_id, encoder.dim, encoder.logit_scale, encoder.context_length,
                   dict(encoder.preprocess_cfg), str(encoder.runtime), str(encoder.device),
                   getattr(encoder, "logit_bias", None))


class ClipPipeline:
    def __init__(self, settings: Settings, info: EncoderInfo,
                 encode_pixels: EncodePixels, encode_texts: EncodeTexts, heads: Heads | None = None):
        self.settings = settings
        self.heads = heads if heads is not None else Heads()
        self.info = info
        self.transform = PilEvalTransform(info.preprocess_cfg)  # the encoder's own pixels, without torch
        self.encode_pixels = encode_pixels
        self.encode_texts = encode_texts
        self.classifier = ZeroShotClassifier(encode_texts, info.model_id, info.logit_scale,
                                             cache_bytes=settings.class_cache_mb * 2**20,
                                             cache_dir=Path(settings.data_dir).expanduser() / "class-cache",
                                             cache_observer=observe_class_cache, logit_bias=info.logit_bias)

    # -- inputs ---------------------------------------------------------------------------
    def load_images(self, raw: Sequence[RawImage]) -> list[Image.Image]:
        s = self.settings
        check_inputs(raw, "images")
        check_count(raw, "images", s.max_images, per_request=True)
        images = []
        for item in raw:
            data = item.data
            if item.url is not None:
                data = fetch_image_bytes(item.url, allowlist=s.url_allowlist, max_bytes=s.max_image_bytes,
                                         timeout_s=s.url_timeout_s, allow_private=s.url_allow_private)
            images.append(decode_image(data or b"", max_bytes=s.max_image_bytes,
                                       max_pixels=s.max_image_pixels, name=item.name))
        return images

    def resolve_templates(self, templates: str | list[str] | None) -> TemplateSet:
        if templates is None or templates == "":
            return load_template_set(DEFAULT_SET)
        if isinstance(templates, str):
            return load_template_set(templates)
        return user_template_set(templates)

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.transform(to_rgb(img)) for img in images])

    def images_pixels(self, raw: Sequence[RawImage]) -> np.ndarray:
        """`load_images`, then `pixels` (blocking: for a worker thread)."""
        return self.pixels(self.load_images(raw))

    def embed_response(self, feats: np.ndarray) -> EmbedResponse:
        """The /embed/* response for the encoder's vectors (blocking: for a worker thread; the service builds
        and serialises it in one, service/app.py)."""
        return EmbedResponse(model=self.info.model_id, dim=self.info.dim, embeddings=np.asarray(feats).tolist())

    # -- endpoints ------------------------------------------------------------------------
    async def image_features(self, raw: Sequence[RawImage]) -> np.ndarray:
        """The images' embeddings: fetched, decoded and preprocessed in a worker thread, encoded on the loop."""
        pixels = await anyio.to_thread.run_sync(self.images_pixels, raw)
        return await self.encode_pixels(pixels)

    async def embed_images(self, raw: Sequence[RawImage]) -> EmbedResponse:
        return await anyio.to_thread.run_sync(self.embed_response, await self.image_features(raw))

    def check_texts(self, texts: object) -> list[str]:
        s = self.settings
        if not isinstance(texts, list):
            raise InvalidInput("texts must be a list of strings")
        check_inputs(texts, "texts")
        check_count(texts, "texts", s.max_texts, per_request=True)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInput(f"text {i} is not a string")
            check_chars(t, f"text {i}", s.max_text_chars,
                        note=f"the model itself reads at most {self.info.context_length} tokens")
        return texts

    async def text_features(self, texts: object) -> np.ndarray:
        """The texts' embeddings, once `check_texts` passes."""
        return await self.encode_texts(self.check_texts(texts))

    async def embed_texts(self, texts: object) -> EmbedResponse:
        return await anyio.to_thread.run_sync(self.embed_response, await self.text_features(texts))

    async def classify(self, raw: Sequence[RawImage], labels: object, templates: str | list[str] | None,
                       top_k: object = None, head: object = None, threshold: object = None) -> ClassifyResponse:
        """`top_k`: None is 5, or with `threshold` every label that clears it. Every input is checked before
        any model work; then the image pixels and the label texts the cache lacks go to the encoder together."""
        asked = None if top_k is None else check_k(top_k, "top_k")
        if head is not None:
            if threshold is not None:
                raise InvalidInput("threshold does not apply to a head: an adapted head's scoring is softmax")
            return await self.classify_with_head(raw, head, labels, templates, asked or DEFAULT_TOP_K)
        if labels is None:
            raise InvalidInput("labels is missing: give class names, or head=NAME for an adapted head (GET /heads)")
        names, cutoff, template_set, pixels, found = await anyio.to_thread.run_sync(
            self._zero_shot_inputs, raw, labels, templates, threshold)
        k = asked if asked is not None else (len(names) if threshold is not None else DEFAULT_TOP_K)
        feats, class_emb = await asyncio.gather(self.encode_pixels(pixels),
                                                self.classifier.class_embeddings(names, template_set, found))
        return await anyio.to_thread.run_sync(self._zero_shot_response, raw, feats, class_emb, names, k, cutoff,
                                              template_set)

    def _zero_shot_inputs(self, raw: Sequence[RawImage], labels: object, templates: str | list[str] | None,
                          threshold: object) -> tuple[list[str], float | None, TemplateSet, np.ndarray,
                                                      dict[str, np.ndarray] | None]:
        """Checked labels, threshold and templates, the images' pixels, and the labels' cached class embeddings
        (blocking: for a worker thread)."""
        s = self.settings
        names = clean_labels(labels, s.max_labels, s.max_label_chars)
        cutoff = check_threshold(threshold, self.classifier.scoring)
        template_set = self.resolve_templates(templates)
        pixels = self.images_pixels(raw)
        return names, cutoff, template_set, pixels, self.classifier.cached(names, template_set)

    def _zero_shot_response(self, raw: Sequence[RawImage], feats: np.ndarray, class_emb: np.ndarray,
                            labels: list[str], k: int, cutoff: float | None,
                            template_set: TemplateSet) -> ClassifyResponse:
        predictions = self.classifier.rank(np.asarray(feats, dtype=np.float32), class_emb, labels, k, cutoff)
        return ClassifyResponse(model=self.info.model_id, scoring=self.classifier.scoring,
                                templates=TemplatesUsed(name=template_set.name, count=len(template_set.templates)),
                                threshold=cutoff, results=_results(raw, predictions))

    # -- adapted heads --------------------------------------------------------------------
    async def classify_with_head(self, raw: Sequence[RawImage], name: object, labels: object, templates: object,
                                 top_k: int) -> ClassifyResponse:
        """Classify with a loaded head: its classes are the labels, no text is encoded."""
        if labels is not None or templates not in (None, ""):
            raise InvalidInput("with head, leave out labels and templates: the head's classes are the labels "
                               "(GET /heads lists them)")
        head = self.heads.for_model(name, self.info.model_id, self.info.dim)
        feats = await self.encode_pixels(await anyio.to_thread.run_sync(self.images_pixels, raw))

        def respond() -> ClassifyResponse:
            predictions = head.predict(np.asarray(feats, dtype=np.float32), k=top_k)
            return ClassifyResponse(model=self.info.model_id, scoring="softmax", head=head.name,
                                    results=_results(raw, predictions))
        return await anyio.to_thread.run_sync(respond)

    async def list_heads(self) -> HeadsResponse:
        heads = []
        for head in self.heads:
            usable = head.model_id == self.info.model_id and head.dim == self.info.dim
            heads.append(HeadInfo(usable=usable, **head.summary()))
        return HeadsResponse(model=self.info.model_id, heads=heads)


def _results(raw: Sequence[RawImage], predictions: list[list[tuple[str, float]]]) -> list[ImageResult]:
    return [ImageResult(image=item.name, predictions=[Prediction(label=l, probability=p) for l, p in preds])
            for item, preds in zip(raw, predictions)]
