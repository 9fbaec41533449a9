"""The model's own eval transform (resize, centre crop, normalise), built from its preprocess config alone.

One function for every place that needs it: the loaders (models/loading.py, models/embedded/) hand it to
`ClipEncoder`, and the public API, which does not load the model, builds the same transform from the config
the encoder service reports (service/pipeline.py), so its pixels are the encoder's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from open_clip.transform import PreprocessCfg, image_transform_v2


def eval_transform(preprocess_cfg: Mapping[str, Any]):
    """open_clip's eval transform for `preprocess_cfg` (open_clip's `PreprocessCfg` fields; JSON lists are
    taken as tuples): PIL RGB image -> (3, H, W) float tensor."""
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in preprocess_cfg.items()}
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)
