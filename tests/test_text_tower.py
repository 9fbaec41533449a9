"""Text batches padded only to their longest sequence give the features of full padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zest.models.clip_encoder import ClipEncoder
from zest.models.text_tower import content_lengths, pad_token_id

TEXTS = ["a cat.", "a photo of a large, fluffy, orange cat sitting on a sunny windowsill in the morning.",
         "dog", "a blurry photo of the {}.".format("hexagon"), "x " * 100, "a red star", ""]


def _full_padding(encoder: ClipEncoder, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        feats = encoder.model.encode_text(encoder.tokenizer(texts))
    return torch.nn.functional.normalize(feats.float(), dim=-1).numpy()


@pytest.fixture(scope="module")
def zest_tiny():
    return ClipEncoder.from_spec("zest-tiny", device="cpu", batch_size=3)


@pytest.mark.parametrize("which", ["open_clip text transformer", "zest-tiny (HF MiniLM)"])
def test_trimmed_batches_equal_full_padding(which, tiny_encoder, zest_tiny):
    encoder = tiny_encoder if which.startswith("open_clip") else zest_tiny
    assert encoder._encode_trimmed is not None  # the fast path is really taken for this tower
    tokens = encoder.tokenizer(TEXTS)
    lengths = content_lengths(tokens, pad_token_id(encoder.tokenizer))
    assert int(lengths.min()) < tokens.shape[1] // 2  # short texts: most of the row is padding
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), _full_padding(encoder, TEXTS), atol=1e-5)


def test_order_and_batching_do_not_change_features(tiny_encoder):
    one_by_one = np.concatenate([tiny_encoder.encode_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(tiny_encoder.encode_texts(TEXTS), one_by_one, atol=1e-5)
    reversed_ = tiny_encoder.encode_texts(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(reversed_, one_by_one, atol=1e-5)
