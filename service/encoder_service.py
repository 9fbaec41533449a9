"""`ClipEncoderService`: the BentoML service that holds the CLIP model (`zest-clip-encoder`).

Loaded once per worker process. Concurrent `encode_pixels` (and `encode_texts`) calls are merged by zest's
`GreedyBatcher` (service/batching.py): a call that finds the model idle runs at once, alone; calls that arrive
while it is busy run together as one forward pass when it frees. `Zest` (service/app.py) calls it through
`bentoml.depends` (service/transport.py). It also embeds the recommender's item texts (`encode_item_texts`,
MiniLM, loaded on first call): that model needs torch, which this process holds already (issue #24).
"""

from __future__ import annotations

import copy
import threading

import bentoml
import numpy as np

from ..models.spec import bento_tag
from . import errors
from .batching import GreedyBatcher
from .lifecycle import fail_start, install_drain
from .metrics import observe_batch, observe_runtime
from .pipeline import EncoderInfo
from .process import CALLEE, PUBLIC_SERVICE, RESOURCES, SETTINGS, log


@bentoml.service(name="zest-clip-encoder", resources=RESOURCES, workers=1, **CALLEE)
class ClipEncoderService:
    """The model, loaded once per worker process; concurrent calls merged by a GreedyBatcher."""

    if bento_tag(SETTINGS.model):
        # A BentoML model tag (`zest models import` prints it), as a class attribute: `bentoml build` packs
        # the model into the bento, and its container serves it with no network.
        model_ref = bentoml.models.BentoModel(bento_tag(SETTINGS.model))

    def __init__(self) -> None:
        # The model libraries are imported here, in the encoder's worker, not with the module: the arbiter and
        # the API worker import this module to build the service graph and run no model.
        import torch

        from ..models.clip_encoder import ClipEncoder
        from ..models.rec.text import MiniLM

        s = SETTINGS
        install_drain("zest-clip-encoder", s.shutdown_timeout_s, public_service=PUBLIC_SERVICE)
        errors.hide_callee_user_errors()
        # A tag loads from the model store that `model_ref` resolves in (the bento's own, in a container).
        try:
            self.encoder = ClipEncoder.from_spec(s.model, device=s.device, precision=s.precision,
                                                 batch_size=s.batch_size, runtime=s.runtime,
                                                 cache_dir=s.runtime_cache_dir,
                                                 child_timeout_s=s.runtime_probe_timeout_s)
        except Exception as exc:  # noqa: BLE001 - stop the server, do not respawn into the same failure
            fail_start("zest-clip-encoder", exc)
        self.encoder.release_torch_weights()  # an ONNX / int8 runtime holds its own copy of the weights
        # One model, two queues: image and text calls merge separately, and the lock runs one forward pass at a
        # time (a pass already uses every core: torch's intra-op threads).
        model_lock = self.model_lock = threading.Lock()
        self.item_texts = MiniLM()  # the recommender's item-text model: loads on its first encode_item_texts

        def locked(fn):
            def run(batch):
                with model_lock:
                    return fn(batch)
            return run

        self.pixel_batcher = GreedyBatcher(locked(self.encoder.encode_pixels), s.max_batch_size, "pixels",
                                           on_batch=lambda requests, items: observe_batch("pixels", requests, items))
        self.text_batcher = GreedyBatcher(locked(self.encoder.encode_texts), max(s.max_batch_size, s.max_texts),
                                          "texts",
                                          on_batch=lambda requests, items: observe_batch("texts", requests, items))
        # usage.prompt_tokens of /v1/embeddings: a tokenizer of its own, so counting never waits for the model
        # (and a Hugging Face tokenizer is never used by two threads at once)
        self.counting_tokenizer = copy.deepcopy(self.encoder.tokenizer)
        self.counting_lock = threading.Lock()
        log.info("loaded %s on %s (dim %d, runtime %s, %d torch threads)", self.encoder.model_id, self.encoder.device,
                 self.encoder.dim, self.encoder.runtime, torch.get_num_threads())
        choice = self.encoder.auto_choice
        observe_runtime(self.encoder.requested_runtime, self.encoder.runtime, self.encoder.device.type,
                        [(c.runtime, c.seconds, c.passed) for c in choice.candidates] if choice else [])

    @bentoml.api
    def info(self) -> dict:
        e = EncoderInfo.of(self.encoder)
        return {"model_id": e.model_id, "dim": e.dim, "logit_scale": e.logit_scale,
                "context_length": e.context_length, "preprocess_cfg": e.preprocess_cfg, "runtime": e.runtime,
                "device": e.device, "logit_bias": e.logit_bias}

    @bentoml.api
    def runtime(self) -> dict:
        """What serves the model: the runtime asked for, the one chosen and (with auto) why."""
        import torch

        e, choice = self.encoder, self.encoder.auto_choice
        return {"requested": e.requested_runtime, "chosen": e.runtime, "device": e.device.type,
                "torch_threads": torch.get_num_threads(), "auto": choice.to_json() if choice else None}

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

    @bentoml.api
    def encode_item_texts(self, texts: list[str]) -> np.ndarray:
        """The recommender's item texts -> (n, 384) float32 MiniLM unit vectors, the vectors its in-process
        `TextEncoder` computes (models/rec/text.py). The model loads on the first call: a server that
        recommends from text pays its ~90 MB here, one that does not pays nothing."""
        from ..models.rec.text import TEXT_DIM, check_texts

        with errors.user_errors_to_caller():
            texts = check_texts(texts)
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        self.item_texts.model  # noqa: B018 - loads it outside the model lock: CLIP calls go on meanwhile
        with self.model_lock:  # one forward pass at a time, CLIP's or MiniLM's
            return self.item_texts.encode(texts)
