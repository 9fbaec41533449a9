"""Put models into the BentoML model store, so that `bentoml build` packs them into the bento.

- `save_to_store`: any model directory (a trained ZESRec model: `zest rec train` calls it).
- `import_clip`: any CLIP model spec, loaded (from the hub, its cache, a file...) and written as a local
  open_clip checkpoint directory (`open_clip_config.json` + `open_clip_model.safetensors`), so that
  `ZEST_MODEL=NAME:VERSION` serves it with no network: `zest models import SPEC`.
- `store_path`: the directory of a stored model (`zest eval --head NAME` reads an adapted head from it).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..models.errors import InvalidInput

_NAME_PART = re.compile(r"[^a-z0-9._-]+")


def save_to_store(directory: str | Path, name: str, metadata: dict | None = None,
                  labels: dict | None = None) -> str:
    """Copy a model directory into the store as a new version of `name`; return its tag."""
    import bentoml

    with bentoml.models.create(name, labels={"project": "zest", **(labels or {})},
                               metadata=metadata or {}) as model:
        shutil.copytree(directory, model.path, dirs_exist_ok=True)
    return str(model.tag)


def default_store_name(spec: str) -> str:
    """A BentoML model name for a CLIP spec: 'ViT-B-32/laion2b_s34b_b79k' -> 'vit-b-32-laion2b_s34b_b79k',
    'hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K' -> 'clip-vit-b-32-laion2b-s34b-b79k', a directory -> its name."""
    from ..models.spec import parse_spec

    parsed = parse_spec(spec)
    if parsed.kind == "hf-hub":
        raw = parsed.name.split("/", 1)[1]
    elif parsed.kind == "local-dir":
        raw = Path(parsed.name).name
    elif parsed.kind == "bento":
        raw = parsed.name.split(":", 1)[0]
    elif parsed.kind == "open_clip" and parsed.pretrained and Path(parsed.pretrained).is_file():  # ARCH/path/to/weights.pt
        raw = f"{parsed.name}-{Path(parsed.pretrained).stem}"
    else:
        raw = parsed.model_id.replace("/", "-")
    name = _NAME_PART.sub("-", raw.lower()).strip("-._")[:63].strip("-._")
    return name or "clip"


def import_clip(spec: str, name: str | None = None) -> str:
    """Load the CLIP model `spec` names and store its config and weights as BentoML model `name`
    (default: derived from the spec). Metadata: the source spec and the model id it loaded as. Returns the tag."""
    import tempfile

    import torch

    from ..models.factory import load_clip
    from ..models.loading import export_checkpoint
    from ..models.spec import bento_tag, parse_spec

    parsed = parse_spec(spec)
    if parsed.kind == "zest":
        raise InvalidInput(f"{spec!r} ships inside zest and every bento: there is nothing to import")
    name = name or default_store_name(spec)
    if bento_tag(f"{name}:v") is None:
        raise InvalidInput(f"--name {name!r}: a BentoML model name is lower-case letters, digits, '-', '_' and '.', "
                           f"at most 63 characters, starting and ending with a letter or digit")
    loaded = load_clip(parsed, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(loaded, tmp)
        return save_to_store(tmp, name, labels={"kind": "clip"},
                             metadata={"source_spec": parsed.model_id, "model_id": loaded.model_id,
                                       "format": "open_clip checkpoint directory (local-dir:)"})


def store_path(tag: str) -> str:
    """The directory of model `tag` (`name` = its latest version) in the store; `NotFound` if absent."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    from ..models.errors import NotFound

    try:
        return str(bentoml.models.get(tag).path)
    except (BentoMLException, ValueError) as exc:
        raise NotFound(f"no model {tag!r} in the BentoML model store ({exc})") from None
