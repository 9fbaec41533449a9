"""Put trained model directories into the BentoML model store, so `bentoml build` packs them."""

from __future__ import annotations

import shutil
from pathlib import Path


def save_to_store(directory: str | Path, name: str, metadata: dict | None = None, labels: dict | None = None) -> str:
    """Copy a model directory into the store as a new version of `name`; return its tag."""
    import bentoml

    with bentoml.models.create(name, labels={"project": "zest", **(labels or {})}, metadata=metadata or {}) as model:
        shutil.copytree(directory, model.path, dirs_exist_ok=True)
    return str(model.tag)


def store_path(tag: str) -> str:
    """The directory of model `tag` (`name` = its latest version) in the store; `NotFound` if absent."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    from ..models.errors import NotFound

    try:
        return str(bentoml.models.get(tag).path)
    except (BentoMLException, ValueError) as exc:
        raise NotFound(f"no model {tag!r} in the BentoML model store ({exc})") from None
