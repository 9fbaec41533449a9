"""POST /v1/embeddings' request logic (service/openai_api.py), in-process (no server): the two encoder calls of a
text request, and the response's bytes."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from zest.models.errors import PayloadTooLarge
from zest.service import openai_api
from zest.service.pipeline import ClipPipeline, EncoderInfo
from zest.service.settings import Settings


def test_text_embedding_and_token_count_are_in_flight_together(tiny_encoder, tmp_path):
    """The embedding and usage's token count are sent at once, each awaited on the event loop's own thread; the
    count is the sum of count_tokens' answer; a bad input fails before either call."""
    calls = []  # (what, event)
    loop_thread = []

    def recorded(what, fn):
        async def call(texts):
            assert threading.get_ident() == loop_thread[0]
            calls.append((what, "start"))
            await asyncio.sleep(0.1)
            calls.append((what, "end"))
            return fn(texts)
        return call

    count_tokens = recorded("count", lambda texts: [len(t) + 2 for t in texts])
    pipeline = ClipPipeline(Settings(max_texts=2, data_dir=str(tmp_path)), EncoderInfo.of(tiny_encoder),
                            recorded("pixels", tiny_encoder.encode_pixels),
                            recorded("texts", tiny_encoder.encode_texts))

    async def main():
        loop_thread.append(threading.get_ident())
        with pytest.raises(PayloadTooLarge):
            await openai_api.text_features(pipeline, ["a", "b", "c"], count_tokens)
        assert calls == []
        return await openai_api.text_features(pipeline, ["a cat", "a dog"], count_tokens)

    feats, tokens = asyncio.run(main())
    assert sorted(calls[:2]) == [("count", "start"), ("texts", "start")]  # both before an end
    assert len(calls) == 4 and tokens == 7 + 7
    np.testing.assert_allclose(feats, tiny_encoder.encode_texts(["a cat", "a dog"]), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_the_response_from_the_encoders_vectors_is_the_embed_responses_bytes(tiny_encoder, tmp_path, dtype,
                                                                             encoding_format):
    """Built from the encoder's array in one step, the JSON is byte for byte what it was when built from
    /embed/text's response (its lists of floats)."""
    pipeline = ClipPipeline(Settings(data_dir=str(tmp_path)), EncoderInfo.of(tiny_encoder), None, None)
    feats = np.random.default_rng(0).standard_normal((3, 32)).astype(dtype)
    via_lists = openai_api.response(pipeline.embed_response(feats).embeddings, encoding_format, "m", 5)
    direct = openai_api.response(feats, encoding_format, "m", 5)
    assert direct.model_dump_json() == via_lists.model_dump_json()
    assert direct.usage.prompt_tokens == direct.usage.total_tokens == 5
