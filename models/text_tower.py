"""Text-tower forward passes padded only to the longest sequence of each batch.

open_clip's tokenizers pad every text to the context length (77 for CLIP), and `CLIP.encode_text` adds the
full positional table, so a batch of short prompts ("a photo of a cat.") runs 77 positions of which most
are padding. Cutting the batch to its longest sequence gives the same features whenever padding cannot
influence the pooled output:

* open_clip's own text transformer with a **causal** mask, pooled at the EOT token (`argmax`) or a
  tokenizer's EOS (`eos`): every position before the EOT sees only earlier positions, so trailing pads
  are never read (the `CLIP` class and `TextTransformer` in `CustomTextCLIP`);
* a Hugging Face text tower (`HFTextEncoder`, e.g. zest-tiny's MiniLM): it builds its attention mask from
  the pad token and pools with it.

Anything else (bidirectional towers without a pad mask, `last`-token pooling, CoCa's appended class
token) keeps the full padding. `tests/test_text_tower.py` checks equality to 1e-5 for both kinds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .compat import clip_trimmed_text_encoder


def pad_token_id(tokenizer) -> int:
    """The id the tokenizer pads with: the HF tokenizer's pad token, or 0 (open_clip's SimpleTokenizer)."""
    hf = getattr(tokenizer, "tokenizer", None)
    pad = getattr(hf, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def content_lengths(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Per row, 1 + the index of the last non-pad token (right padding)."""
    not_pad = tokens != pad_id
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return (not_pad * positions).amax(dim=1)


def _causal_pool_ok(pool_type: str | None, attn_mask, cls_emb) -> bool:
    return attn_mask is not None and cls_emb is None and pool_type in ("argmax", "eos")


def trimmed_text_encoder(model) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function tokens -> text features that accepts batches cut to their longest sequence, or None
    when this model's text tower can only be run at full padding."""
    from open_clip.model import CLIP, CustomTextCLIP

    if isinstance(model, CLIP) and hasattr(model, "positional_embedding"):
        if _causal_pool_ok(getattr(model, "text_pool_type", None), getattr(model, "attn_mask", None), None):
            return clip_trimmed_text_encoder(model)  # open_clip's internals: models/compat.py
        return None
    if isinstance(model, CustomTextCLIP):
        from open_clip.hf_model import HFTextEncoder
        from open_clip.transformer import TextTransformer

        text = model.text
        if isinstance(text, HFTextEncoder):
            return model.encode_text
        if isinstance(text, TextTransformer) and (
                getattr(text, "use_pad_mask", False)
                or _causal_pool_ok(getattr(text, "pool_type", None), getattr(text, "attn_mask", None), text.cls_emb)):
            return model.encode_text  # TextTransformer slices its positions and mask to the input length
    return None
