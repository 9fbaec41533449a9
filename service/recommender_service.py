"""`RecommenderService`: the BentoML service that holds the ZESRec model and the item catalogue
(`zest-recommender`); the request logic is service/recommender.py.

Its API takes and returns the schemas of service/schemas.py. A user error (an unknown item id, a limit) leaves
it as a 4xx that `Zest` (service/app.py) raises again as the same zest error, status and message
(service/errors.py, `user_errors_to_caller`).

Item texts are embedded by the encoder service (`bentoml.depends(ClipEncoderService)`, service/item_texts.py):
MiniLM needs torch, which that process holds already, so this one imports none (issue #24).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import bentoml
from bentoml.exceptions import ServiceUnavailable

from . import errors
from .encoder_service import ClipEncoderService
from .errors import DependencyDown
from .item_texts import EncoderItemTexts
from .lifecycle import fail_start, install_drain
from .process import CALLEE, PUBLIC_SERVICE, SETTINGS, log
from .recommender import NO_MODEL, build_recommender, has_model, shipped_model_dir
from .schemas import ItemDeletedResponse, ItemIn, ItemResponse, ItemsResponse, RecommendRequest, RecommendResponse


# runner_probe off, as on `Zest` (service/app.py): BentoML's /readyz would wait on the encoder's (up to 5 s, an
# ASGI error when it times out) and make this service's readiness the encoder's; ranking stored items needs no
# encoder, and `Zest` probes the encoder itself.
@bentoml.service(name="zest-recommender", workers=SETTINGS.rec_workers,
                 runner_probe={"enabled": False, "timeout": 1, "period": 10}, **CALLEE)
class RecommenderService:
    """ZESRec model + item catalogue. One worker on the embedded store (its single writer); with a shared
    Milvus store ZEST_REC_WORKERS may be more (settings.py refuses more workers on a single-writer store)."""

    if SETTINGS.rec_model and not os.path.isdir(SETTINGS.rec_model):
        # A BentoML model tag, as a class attribute: `bentoml build` packs the model into the bento.
        model_ref = bentoml.models.BentoModel(SETTINGS.rec_model)

    encoder_proxy = bentoml.depends(ClipEncoderService)  # embeds the item texts (MiniLM)

    def __init__(self) -> None:
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
        # at start (a catalogue re-embedded for a new item model) MiniLM runs here: see service/item_texts.py
        self.item_texts = EncoderItemTexts(self.encoder_proxy)
        try:
            self.rec = build_recommender(model_dir, model_id, SETTINGS, embed=self.item_texts)
        except Exception as exc:  # noqa: BLE001 - stop the server, do not respawn into the same failure
            fail_start("zest-recommender", exc)
        self.item_texts.starting = False
        log.info("recommender %s ready with %d items", model_id, len(self.rec.catalog))

    @staticmethod
    @contextmanager
    def _errors() -> Iterator[None]:
        """A user error leaves as its 4xx; the encoder not answering as a 503 (Zest answers it as one)."""
        try:
            with errors.user_errors_to_caller():
                yield
        except DependencyDown as exc:
            raise ServiceUnavailable(str(exc)) from exc

    def _recommender(self):
        if self.rec is None:  # `Zest` answers 503 itself without a model (recommender.has_model)
            raise ServiceUnavailable(NO_MODEL)
        return self.rec

    @bentoml.api
    def upsert_items(self, items: list[ItemIn]) -> ItemsResponse:
        with self._errors():
            return ItemsResponse(**self._recommender().upsert(items))

    @bentoml.api
    def get_item(self, item_id: str) -> ItemResponse:
        with self._errors():
            return ItemResponse(**self._recommender().get(item_id))

    @bentoml.api
    def delete_item(self, item_id: str) -> ItemDeletedResponse:
        with self._errors():
            return ItemDeletedResponse(**self._recommender().delete(item_id))

    @bentoml.api
    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        with self._errors():
            return RecommendResponse(**self._recommender().recommend(**request.model_dump()))
