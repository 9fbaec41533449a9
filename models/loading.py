"""Turn a `ModelSpec` into a loaded open_clip model, its eval transform and its tokenizer.

This is the one place that talks to open_clip's factory; failures come out as a single
`ModelLoadError` that names the spec and what to do, not a stack of library traces.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelLoadError
from .hub import OFFLINE_HINT, hub_file
from .loaded import LoadedClip
from .spec import RANDOM_WEIGHTS, ModelSpec

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
HF_WEIGHTS_FILE = "open_clip_pytorch_model.bin"  # open_clip's older name on the hub; WEIGHTS_FILE is preferred
PREPROCESS_KEYS = ("mode", "mean", "std", "interpolation", "resize_mode", "fill_color")  # size: the model's own

__all__ = [
    "CONFIG_FILE",
    "OFFLINE_HINT",
    "WEIGHTS_FILE",
    "export_checkpoint",
    "load_bento_model",
    "load_open_clip",
    "save_checkpoint",
]


def _is_offline_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    needles = ("offline", "connect", "resolve", "network", "timed out", "localentrynotfound", "max retries",
               "couldn't find", "cannot find the requested files", "name or service not known", "download")
    chain: BaseException | None = exc
    while chain is not None:
        text += f" {type(chain).__name__}: {chain}".lower()
        chain = chain.__cause__ or chain.__context__
    return any(n in text for n in needles)


@dataclass
class _Plan:
    """How open_clip's factory is called for one spec. Hub files are already local by then."""

    model_name: str  # open_clip model name: an architecture, or local-dir:PATH
    pretrained: str | None = None  # a weights file, or a URL-only tag (open_clip downloads those)
    load_weights: bool = True
    tokenizer_name: str | None = None  # for open_clip.get_tokenizer (default: model_name)
    force_preprocess_cfg: dict | None = None
    model_cfg: dict | None = None


def _read_config(path: str | Path, spec: ModelSpec) -> dict:
    import json

    try:
        config = json.loads(Path(path).read_text())
        config["model_cfg"]["vision_cfg"], config["model_cfg"]["text_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"cannot load model '{spec.model_id}': {path} is not an open_clip config with a "
                             f"full model_cfg ({type(exc).__name__}: {exc})") from None
    return config


def _safe_alternatives(filename: str) -> list[str]:
    """The names open_clip tries for a hub weights file, safetensors first (as its download does)."""
    if filename == HF_WEIGHTS_FILE:
        return [WEIGHTS_FILE, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hf_hub_plan(spec: ModelSpec) -> _Plan:
    """hf-hub:ORG/NAME: config and weights into the HF cache (hub.hub_file), then built from that snapshot."""
    config_path = Path(hub_file(spec.model_id, spec.name, [CONFIG_FILE]))
    weights_path = Path(hub_file(spec.model_id, spec.name, [WEIGHTS_FILE, HF_WEIGHTS_FILE]))
    if weights_path.parent != config_path.parent:
        raise ModelLoadError(f"cannot load model '{spec.model_id}': the cached config and weights come from different "
                             f"revisions ({config_path.parent.name}, {weights_path.parent.name}); download it again")
    model_cfg = _read_config(config_path, spec)["model_cfg"]
    # Built from the snapshot directory (no second trip to the hub); an HF tokenizer is still named by its
    # hub id as open_clip does, a plain one needs nothing but the config.
    uses_hf_tokenizer = bool(model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"))
    return _Plan(f"local-dir:{config_path.parent}",
                 tokenizer_name=f"hf-hub:{spec.name}" if uses_hf_tokenizer else None, model_cfg=model_cfg)


def _plan(spec: ModelSpec) -> _Plan:
    import open_clip

    if spec.kind == "hf-hub":
        return _hf_hub_plan(spec)
    if spec.kind == "local-dir":
        path = Path(spec.name)
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(
                f"cannot load model 'local-dir:{path}': no {CONFIG_FILE} there. A local checkpoint is a "
                f"directory with {CONFIG_FILE} and {WEIGHTS_FILE} (zest.models.loading.save_checkpoint writes one)"
            )
        return _Plan(f"local-dir:{path}", model_cfg=_read_config(path / CONFIG_FILE, spec)["model_cfg"])
    arch = spec.name
    if arch not in open_clip.list_models():
        raise ModelLoadError(
            f"cannot load model '{spec.model_id}': unknown open_clip architecture {arch!r} "
            f"(open_clip.list_models() lists the known ones)"
        )
    model_cfg = open_clip.get_model_config(arch)
    if spec.pretrained == RANDOM_WEIGHTS:
        return _Plan(arch, load_weights=False, model_cfg=model_cfg)
    if spec.pretrained is not None and os.path.isfile(spec.pretrained):
        return _Plan(arch, spec.pretrained, model_cfg=model_cfg)
    if spec.pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelLoadError(
            f"cannot load model '{spec.model_id}': {spec.pretrained!r} is neither a pretrained tag of {arch} "
            f"(known: {tags}) nor an existing weights file"
        )
    tag_cfg = open_clip.get_pretrained_cfg(arch, spec.pretrained)
    if tag_cfg.get("hf_hub") and not tag_cfg.get("file"):
        # The tag's weights live in a hub repository ('ORG/NAME/' or 'ORG/NAME/FILE'): fetch them the way
        # hf-hub specs are fetched, then hand open_clip the file and the tag's preprocessing, which is
        # exactly what it would use after downloading the tag itself.
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        weights = hub_file(spec.model_id, repo_id, _safe_alternatives(filename or HF_WEIGHTS_FILE))
        return _Plan(arch, weights, model_cfg=model_cfg,
                     force_preprocess_cfg={k: tag_cfg[k] for k in PREPROCESS_KEYS if tag_cfg.get(k) is not None})
    return _Plan(arch, spec.pretrained, model_cfg=model_cfg)  # a URL-only tag: open_clip downloads it


def load_open_clip(spec: ModelSpec, device: torch.device) -> LoadedClip:
    """Load any open_clip model (built-in arch + tag/file/random, hf-hub, local dir)."""
    import open_clip

    plan = _plan(spec)
    try:
        from .transform import eval_transform

        model = open_clip.create_model(plan.model_name, pretrained=plan.pretrained, load_weights=plan.load_weights,
                                       device=device, force_preprocess_cfg=plan.force_preprocess_cfg)
        # the eval transform, as create_model_and_transforms builds it
        preprocess = eval_transform(model.visual.preprocess_cfg)
        tokenizer = open_clip.get_tokenizer(plan.tokenizer_name or plan.model_name)
    except ModelLoadError:
        raise
    except Exception as exc:  # open_clip / hub / torch errors: one clear message instead
        if _is_offline_error(exc):
            raise ModelLoadError(f"cannot load model '{spec.model_id}': {OFFLINE_HINT}. (cause: {exc})") from exc
        raise ModelLoadError(f"cannot load model '{spec.model_id}': {type(exc).__name__}: {exc}") from exc
    if not plan.load_weights:
        log.warning("model %s has random weights: its predictions are meaningless", spec.model_id)
    return LoadedClip(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_id=spec.model_id,
        preprocess_cfg=dict(getattr(model.visual, "preprocess_cfg", {})),
        model_cfg=plan.model_cfg,
    )


def load_bento_model(spec: ModelSpec, device: torch.device) -> LoadedClip:
    """A model `zest models import` stored in the BentoML model store (a local checkpoint directory there).
    Its id is the resolved tag, NAME:VERSION: it names exactly these weights."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.get(spec.name)
    except (NotFound, ValueError) as exc:
        home = os.environ.get("BENTOML_HOME", "~/bentoml")
        raise ModelLoadError(f"cannot load model '{spec.name}': no such model in the BentoML model store "
                             f"({home}/models): {exc}. `zest models import SPEC` stores one, `bentoml models list` "
                             f"lists them") from None
    loaded = load_open_clip(ModelSpec("local-dir", stored.path), device)
    loaded.model_id = str(stored.tag)
    return loaded


def save_checkpoint(model: torch.nn.Module, model_cfg: dict, directory: str | Path,
                    preprocess_cfg: dict | None = None) -> Path:
    """Write `model` as a local open_clip checkpoint directory that `local-dir:` specs load."""
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory


def export_checkpoint(loaded: LoadedClip, directory: str | Path) -> Path:
    """Write a loaded model as a self-contained local checkpoint directory: config, weights and, for a
    Hugging Face tokenizer, its files (open_clip's `local-dir:` loads such a tokenizer from the directory).
    What `zest models import` stores. Raises `ModelLoadError` for a model one directory cannot describe."""
    cfg = loaded.model_cfg
    if cfg is None:
        raise ModelLoadError(f"cannot export model '{loaded.model_id}': it has no open_clip config "
                             f"(zest's own models ship inside zest and need no import)")
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        raise ModelLoadError(
            f"cannot export model '{loaded.model_id}': its text tower is the Hugging Face model "
            f"{text_cfg['hf_model_name']!r}, whose config open_clip looks up by that name when it builds the model, "
            f"so a checkpoint directory cannot carry it; serve it from a filled Hugging Face cache (HF_HOME) instead"
        )
    directory = save_checkpoint(loaded.model, cfg, directory, loaded.preprocess_cfg)
    save_pretrained = getattr(loaded.tokenizer, "save_pretrained", None)
    if text_cfg.get("hf_tokenizer_name") and callable(save_pretrained):
        save_pretrained(str(directory))
    return directory
