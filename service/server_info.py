"""GET /info: the served model, its runtime and device, heads, template sets and each model service's readiness."""

from __future__ import annotations

from .. import __version__
from ..prompts import list_template_sets
from .pipeline import ClipPipeline
from .schemas import InfoResponse


def server_info(pipeline: ClipPipeline | None, services: dict[str, bool], recommender: bool,
                heads: list[str]) -> InfoResponse:
    """`pipeline` None: the encoder service is not up yet (model fields null)."""
    info = pipeline.info if pipeline is not None else None
    return InfoResponse(version=__version__, model=info.model_id if info else None, dim=info.dim if info else None,
                        runtime=(info.runtime or None) if info else None, device=(info.device or None) if info else None,
                        scoring=pipeline.classifier.scoring if pipeline is not None else None,
                        heads=heads, template_sets=[s.name for s in list_template_sets()], services=services,
                        recommender=recommender)
