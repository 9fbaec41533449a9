"""zest's one reach into open_clip's internals, and the version guard every compatibility patch uses.

A `Patch` names what it works around, the upstream issue and the versions it was checked on; `enabled(patch)`
is its start-up check: on any other installed version, or when what the patch relies on is gone, the patch
is disabled with one warning naming it, and the caller falls back to the library's own behaviour. The
service-side patches (BentoML, uvicorn) are in service/compat.py.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    import torch

log = logging.getLogger("zest")


@dataclass(frozen=True)
class Patch:
    """One patch of a library's internals. `checked`: a PEP 440 range of the versions it was verified on."""

    name: str
    distribution: str
    checked: str
    fixes: str
    upstream: str


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _version_checked(patch: Patch) -> bool:
    version = installed_version(patch.distribution)
    try:
        ok = version is not None and Version(version) in SpecifierSet(patch.checked)
    except InvalidVersion:
        ok = False
    if not ok:
        log.warning("compat: %s disabled: %s %s is outside the versions it was checked on (%s); %s (upstream: "
                    "%s)", patch.name, patch.distribution, version, patch.checked, patch.fixes, patch.upstream)
    return ok


_MISSING_WARNED: set[str] = set()


def enabled(patch: Patch, relies_on: Callable[[], bool] | None = None) -> bool:
    """The start-up check: the installed version lies in `patch.checked` and `relies_on()` holds (the internals
    are where the patch expects them). Otherwise the patch is disabled, with one warning per process."""
    if not _version_checked(patch):
        return False
    if relies_on is None:
        return True
    try:
        present = relies_on()
    except Exception:  # noqa: BLE001 - any failure to find the internals disables the patch
        present = False
    if not present and patch.name not in _MISSING_WARNED:
        _MISSING_WARNED.add(patch.name)
        log.warning("compat: %s disabled: %s %s lacks the internals it patches; %s (upstream: %s)", patch.name,
                    patch.distribution, installed_version(patch.distribution), patch.fixes, patch.upstream)
    return present


# -- open_clip ------------------------------------------------------------------------------------------
OPEN_CLIP_TRIMMED_TEXT = Patch(
    name="open_clip trimmed text tower",
    distribution="open_clip_torch",
    checked=">=3.3,<3.4",
    fixes="CLIP.encode_text runs the full 77-position context on short prompts; zest re-runs its steps with the "
          "positional table and causal mask cut to the batch's longest sequence (same features, fewer positions)",
    upstream="none filed (open_clip has no variable-length text path for the CLIP class; "
             "https://github.com/mlfoundations/open_clip/issues/515 discusses its fixed context length)",
)

_CLIP_TEXT_ATTRS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection",
                    "attn_mask", "text_pool_type")


def _clip_text_internals(model: Any) -> bool:
    from open_clip import transformer

    return callable(getattr(transformer, "text_global_pool", None)) and all(
        hasattr(model, a) for a in _CLIP_TEXT_ATTRS) and callable(getattr(model.transformer, "get_cast_dtype", None))


def clip_trimmed_text_encoder(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`open_clip.CLIP.encode_text` re-run on its attributes with the positional table and causal mask cut to the
    batch length; None when the guard disables it (full padding then)."""
    if not enabled(OPEN_CLIP_TRIMMED_TEXT, lambda: _clip_text_internals(model)):
        return None
    import torch  # here, not at module level: the API worker imports the guards and runs no model
    from open_clip.transformer import text_global_pool

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype)
        x = x + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        projection = model.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x

    return encode
