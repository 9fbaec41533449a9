"""zest's model layer: CLIP encoders, the zero-shot head, and the recommender models."""

from .errors import InvalidInput, ModelLoadError, NotFound, PayloadTooLarge, ZestError

__all__ = ["InvalidInput", "ModelLoadError", "NotFound", "PayloadTooLarge", "ZestError"]
