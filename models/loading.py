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
from .hub import OFFLINE_HINT, hub_directory, hub_file
from .loaded import LoadedClip
from .spec import RANDOM_WEIGHTS, ModelSpec

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
HF_WEIGHTS_FILE = "open_clip_pytorch_model.bin"  # open_clip's older name on the hub; WEIGHTS_FILE is preferred
PREPROCESS_KEYS = ("mode", "mean", "std", "interpolation", "resize_mode", "fill_color")  # size: the model's own
HF_TEXT_DIR = "hf_text_config"  # in a checkpoint: the HF config of an `hf_model_name` text tower
# The files of a Hugging Face tokenizer (any of them a repository has): what `from_pretrained(directory)` reads.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
TOKENIZER_EXTRA_FILES = ("special_tokens_map.json", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model",
                         "tokenizer.model", "vocab.txt", "vocab.json", "merges.txt", "config.json")

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
    tokenizer_dir: str | None = None  # a local directory of HF tokenizer files (instead of tokenizer_name)
    text_cfg: dict | None = None  # replaces the config's text_cfg: an hf_model_name tower's config made local


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
    # Built from the snapshot directory (no second trip to the hub)
    return _with_local_text(spec, _Plan(f"local-dir:{config_path.parent}", model_cfg=model_cfg))


def _with_local_text(spec: ModelSpec, plan: _Plan) -> _Plan:
    """`plan` with its HF tokenizer's files and its HF text tower's config (`hf_model_name`) fetched through
    hub_file, into the cache once and then from it. open_clip would ask the hub for both by name at every start
    and, with the hub down, wait and fail. Only for plans that load a full checkpoint (the tower's weights)."""
    text_cfg = (plan.model_cfg or {}).get("text_cfg", {})
    name = text_cfg.get("hf_tokenizer_name")
    if name:
        plan.tokenizer_dir = name if Path(name).is_dir() else hub_directory(spec.model_id, name, TOKENIZER_FILES,
                                                                                TOKENIZER_EXTRA_FILES)
    hf_text = text_cfg.get("hf_model_name")
    if hf_text and not Path(hf_text).is_dir():
        plan.text_cfg = {**text_cfg, "hf_model_name": str(Path(hub_file(spec.model_id, hf_text, ["config.json"])).parent),
                         "hf_model_pretrained": False}
    return plan


def _packed_text_cfg(directory: Path, model_cfg: dict) -> dict | None:
    """The text_cfg of a checkpoint whose `hf_model_name` is the HF config packed beside it ("./hf_text_config",
    what `export_checkpoint` writes), pointed at that directory; None for any other checkpoint."""
    text_cfg = model_cfg.get("text_cfg", {})
    name = text_cfg.get("hf_model_name")
    if not isinstance(name, str) or not name.startswith("./"):
        return None
    return {**text_cfg, "hf_model_name": str(directory / name[2:]), "hf_model_pretrained": False}


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
        model_cfg = _read_config(path / CONFIG_FILE, spec)["model_cfg"]
        return _Plan(f"local-dir:{path}", model_cfg=model_cfg, text_cfg=_packed_text_cfg(path, model_cfg))
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
        return _with_local_text(spec, _Plan(arch, spec.pretrained, model_cfg=model_cfg))
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
        return _with_local_text(spec, _Plan(
            arch, weights, model_cfg=model_cfg,
            force_preprocess_cfg={k: tag_cfg[k] for k in PREPROCESS_KEYS if tag_cfg.get(k) is not None}))
    return _with_local_text(spec, _Plan(arch, spec.pretrained, model_cfg=model_cfg))  # URL-only: open_clip downloads


def load_open_clip(spec: ModelSpec, device: torch.device) -> LoadedClip:
    """Load any open_clip model (built-in arch + tag/file/random, hf-hub, local dir)."""
    import open_clip

    plan = _plan(spec)
    try:
        from .transform import eval_transform

        overrides = {"text_cfg": plan.text_cfg} if plan.text_cfg is not None else {}
        model = open_clip.create_model(plan.model_name, pretrained=plan.pretrained, load_weights=plan.load_weights,
                                       device=device, force_preprocess_cfg=plan.force_preprocess_cfg, **overrides)
        # the eval transform, as create_model_and_transforms builds it
        preprocess = eval_transform(model.visual.preprocess_cfg)
        if plan.tokenizer_dir is not None:
            tokenizer = _hf_tokenizer(plan.tokenizer_dir, (plan.model_cfg or {}).get("text_cfg", {}))
        else:
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


def _hf_tokenizer(directory: str, text_cfg: dict):
    """open_clip's HFTokenizer from local files, configured as `open_clip.get_tokenizer` configures it from a
    model's text_cfg (context length, tokenizer_mode, tokenizer_kwargs such as SigLIP's clean=canonicalize)."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    return HFTokenizer(directory, context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
                       tokenizer_mode=text_cfg.get("tokenizer_mode"), **dict(text_cfg.get("tokenizer_kwargs", {})))


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
    """Write a loaded model as a self-contained local checkpoint directory: config, weights, for a Hugging Face
    tokenizer its files (open_clip's `local-dir:` loads such a tokenizer from the directory), and for a Hugging
    Face text tower (`hf_model_name`) its HF config, in HF_TEXT_DIR, with `hf_model_name` rewritten to point
    there ("./hf_text_config": `local-dir:` loading resolves it). What `zest models import` stores; such a
    directory loads with no network. Raises `ModelLoadError` for a model one directory cannot describe."""
    cfg = loaded.model_cfg
    if cfg is None:
        raise ModelLoadError(f"cannot export model '{loaded.model_id}': it has no open_clip config "
                             f"(zest's own models ship inside zest and need no import)")
    text_cfg = cfg.get("text_cfg", {})
    hf_config = None
    if text_cfg.get("hf_model_name"):
        hf_config = getattr(getattr(loaded.model, "text", None), "config", None)
        if not callable(getattr(hf_config, "save_pretrained", None)):
            raise ModelLoadError(f"cannot export model '{loaded.model_id}': its text tower names the Hugging Face "
                                 f"model {text_cfg['hf_model_name']!r}, but the loaded tower has no HF config to pack")
        text_cfg = {k: v for k, v in text_cfg.items() if k != "hf_model_pretrained"} | {
            "hf_model_name": f"./{HF_TEXT_DIR}"}
        cfg = {**cfg, "text_cfg": text_cfg}
    directory = save_checkpoint(loaded.model, cfg, directory, loaded.preprocess_cfg)
    if hf_config is not None:
        hf_config.save_pretrained(str(Path(directory) / HF_TEXT_DIR))
    save_pretrained = getattr(loaded.tokenizer, "save_pretrained", None)
    if text_cfg.get("hf_tokenizer_name") and callable(save_pretrained):
        save_pretrained(str(directory))
    return directory
