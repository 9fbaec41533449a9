"""The OpenAI-compatible embeddings API (`POST /v1/embeddings`, `GET /v1/models`), independent of HTTP.

Answers what clients built for OpenAI's API send (the `openai` package, LangChain, LlamaIndex) from the same
pipeline as /embed/text and /embed/image, so the vectors are the same; images as Infinity's `"modality":
"image"` extension. What is accepted and refused (token arrays, other `dimensions`) and why: the README's
"OpenAI-compatible embeddings" section. Errors are zest's one shape, `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from ..models.errors import InvalidInput, NotFound
from .http_input import raw_images
from .pipeline import ClipPipeline, RawImage
from .schemas import ImageRef, OpenAIEmbeddingsRequest, OpenAIEmbeddingsResponse

CountTokens = Callable[[list[str]], Awaitable[list[int]]]  # the encoder service's count_tokens, awaited on the loop


def inputs_of(body: OpenAIEmbeddingsRequest) -> list[str]:
    """The request's inputs as a list (the schema refuses token arrays and an empty list)."""
    return [body.input] if isinstance(body.input, str) else list(body.input)


def check_model(requested: str, served: str) -> None:
    if requested != served:
        raise NotFound(f"model {requested!r} is not served here; this server serves {served!r} (GET /v1/models)")


def check_dimensions(dimensions: int | None, model: str, dim: int) -> None:
    if dimensions is not None and dimensions != dim:
        raise InvalidInput(f"dimensions={dimensions} is not supported: {model!r} gives {dim}-dimensional embeddings "
                           "and CLIP embeddings cannot be shortened (they are not trained as Matryoshka "
                           f"embeddings); omit dimensions, or send {dim}")


def image_inputs(inputs: Sequence[str]) -> list[RawImage]:
    """Data URIs, base64 or http(s) URLs -> RawImage (decoded and checked later, like every image)."""
    raw: list[RawImage] = []
    for i, item in enumerate(inputs):
        name = f"input[{i}]"
        if item.startswith(("http://", "https://")):
            raw.append(RawImage(name=name, url=item))
        else:
            raw += raw_images([ImageRef(base64=item, name=name)])
    return raw


async def text_features(pipeline: ClipPipeline, inputs: list[str], count_tokens: CountTokens) -> tuple[np.ndarray, int]:
    """The texts' embeddings and `usage`'s token count. The texts are checked first (a bad input fails before any
    encoder call); then the embedding and the count (the encoder's own tokenizer) are in flight together."""
    texts = pipeline.check_texts(inputs)
    feats, counts = await asyncio.gather(pipeline.encode_texts(texts), count_tokens(texts))
    return feats, sum(counts)


def encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32).tolist()


def response(vectors: Sequence[Sequence[float]] | np.ndarray, encoding_format: str, model: str,
             tokens: int) -> OpenAIEmbeddingsResponse:
    """The response for the encoder's `vectors` (blocking: for a worker thread, where service/app.py also
    serialises it)."""
    return OpenAIEmbeddingsResponse.model_validate({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(np.asarray(v), encoding_format)}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def models_response(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "zest"}]}
