"""The served recommender's calls to the encoder service for item texts (service/item_texts.py), against a fake
proxy: a dropped connection is sent again, a user error comes back as itself, an encoder that stays away is a 503;
while the service starts, the texts are embedded in the process."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException

from zest.models.errors import InvalidInput
from zest.service.errors import DependencyDown
from zest.service.item_texts import ATTEMPTS, EncoderItemTexts


class FakeClient:
    """`proxy.to_sync`: raises `failures` in turn, then answers one row per text."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = list(failures)
        self.calls: list[tuple[str, list[str]]] = []

    def call(self, method: str, texts: list[str]) -> np.ndarray:
        self.calls.append((method, texts))
        if self.failures:
            raise self.failures.pop(0)
        return np.ones((len(texts), 384), np.float64)


class FakeProxy:
    def __init__(self, failures: list[BaseException]) -> None:
        self.to_sync = FakeClient(failures)


def started(failures: list[BaseException]) -> EncoderItemTexts:
    embed = EncoderItemTexts(FakeProxy(failures), local=lambda: pytest.fail("not while started"))
    embed.starting = False
    return embed


def test_a_dropped_connection_is_sent_again_and_the_rows_are_float32():
    embed = started([aiohttp.ServerDisconnectedError(), RuntimeError("Connection closed.")])
    out = embed(["a", "b"])
    assert out.dtype == np.float32 and out.shape == (2, 384)
    assert embed.proxy.to_sync.calls == [("encode_item_texts", ["a", "b"])] * 3


def test_an_encoder_that_stays_away_is_a_503_after_the_attempts():
    embed = started([aiohttp.ClientConnectionError("refused")] * ATTEMPTS)
    with pytest.raises(DependencyDown) as info:
        embed(["a"])
    assert info.value.status_code == 503 and len(embed.proxy.to_sync.calls) == ATTEMPTS


def test_a_timeout_is_not_repeated():
    embed = started([TimeoutError()])
    with pytest.raises(DependencyDown):
        embed(["a"])
    assert len(embed.proxy.to_sync.calls) == 1


def test_a_user_error_from_the_encoder_comes_back_as_itself():
    embed = started([BentoMLException('{"error": "text #0 is empty"}', error_code=400)])
    with pytest.raises(InvalidInput, match="text #0 is empty"):
        embed(["a"])
    assert len(embed.proxy.to_sync.calls) == 1


def test_while_starting_the_texts_are_embedded_in_the_process():
    """BentoML's sync client cannot run from the service's __init__ (a catalogue re-embedded at start)."""
    built = []

    def local():
        built.append(1)
        return lambda texts: np.zeros((len(texts), 384), np.float64)

    embed = EncoderItemTexts(FakeProxy([]), local=local)
    assert embed(["a"]).dtype == np.float32 and embed(["b", "c"]).shape == (2, 384)
    assert built == [1] and embed.proxy.to_sync.calls == []
    embed.starting = False
    assert embed(["d"])[0, 0] == 1 and len(embed.proxy.to_sync.calls) == 1
