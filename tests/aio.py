"""Async pipeline pieces (service/pipeline.py, service/collections.py, models/classifier.py) driven from
synchronous tests: a local encoder's calls as awaitables, and an object's coroutine methods run to the end."""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any


def local(fn):
    """A local (blocking) encoder call as the awaitable callable ClipPipeline and ZeroShotClassifier take."""
    async def call(*args: Any) -> Any:
        return fn(*args)
    return call


class Sync:
    """`obj` with each coroutine method run to its end in a fresh event loop (`asyncio.run`); anything
    else passes through."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            out = value(*args, **kwargs)
            return asyncio.run(out) if inspect.iscoroutine(out) else out
        return call
