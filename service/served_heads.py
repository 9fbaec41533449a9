"""The adapted heads a server serves (ZEST_HEADS): declared on the public service for `bentoml build`, loaded
when it starts. What a head is, and its format on disk: models/heads.py.

Each ZEST_HEADS entry is a head directory, or a BentoML model tag (`zest adapt DIR --name NAME` stores one).
A tag is declared as a class attribute of the service (`head_model_<i>`, a `bentoml.models.BentoModel`), like
the model services' `model_ref`, so that `bentoml build` packs it and a container serves it with no network.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import bentoml

from ..models.errors import ModelLoadError
from ..models.heads import Heads, is_head_path, load_heads

log = logging.getLogger("zest")


def declare_heads(entries: Sequence[str]):
    """A class decorator: each entry of `entries` (ZEST_HEADS) that is not a head directory is a BentoML model
    tag, declared as the class attribute `head_model_<i>`."""
    def declare(cls):
        for i, entry in enumerate(entries):
            if not is_head_path(entry):
                setattr(cls, f"head_model_{i}", bentoml.models.BentoModel(entry))
        return cls

    return declare


def load_served_heads(service: object, entries: Sequence[str]) -> Heads:
    """The heads of `entries` (ZEST_HEADS), tags resolved through `service`'s declarations; ModelLoadError,
    naming the entry, if one is missing."""
    sources = []
    for i, entry in enumerate(entries):
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
