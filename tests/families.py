"""Tiny models of each open_clip family, built in the test: random weights, tiny widths, local tokenizer files.

* ``clip``: open_clip's own ViT and causal text transformer (OpenAI CLIP), SimpleTokenizer.
* ``siglip``: what open_clip's SigLIP / SigLIP 2 configs describe, scaled down: a timm ViT image tower
  (``test_vit``) with MAP pooling and no projection, a bidirectional text transformer pooled at the last
  position, an HF tokenizer with ``clean: canonicalize`` padded to ``max_length`` with its EOS, and a
  non-zero ``logit_bias``.
* ``hf-text``: a CLIP whose text tower is a Hugging Face transformer (``hf_model_name``): a tiny
  xlm-roberta config, its tokenizer (``<s>``/``<pad>``/``</s>``), mean pooling, an MLP projection.
* ``coca``: CoCa (attentional-pool image tower, text tower with an appended class token).
* ``timm-image``: a timm ResNet image tower with a linear projection, open_clip's text transformer.

`build(family, directory)` writes a zest/open_clip local checkpoint directory (config, weights and, for HF
tokenizers, the tokenizer files) and returns it. Nothing is downloaded: tokenizers are made with `tokenizers`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip
import torch

FAMILIES = ("clip", "siglip", "hf-text", "coca", "timm-image")
WORDS = ["a", "photo", "of", "the", "this", "is", "an", "image", "picture", "drawing", "cat", "dog", "car", "tree",
         "red", "blue", "green", "circle", "square", "triangle", "star", "sign", "text", "on", "yellow", "black",
         "and", "white", "pattern", "small", "large", "thing", "zest", "probe", "cats", "dogs", "bird", ".", ","]
CONTEXT = 16
SIGLIP_BIAS = -1.5
_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
_VIT = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}


def hf_tokenizer(directory: Path, kind: str) -> None:
    """A word-level fast tokenizer saved with `save_pretrained`: "siglip" (pads with its EOS ``</s>``, no BOS,
    like SigLIP's sentencepiece) or "xlmr" (``<s> ... </s>``, pad id 1, like xlm-roberta)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"] if kind == "siglip" else ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "siglip":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="</s>", eos_token="</s>", unk_token="<unk>",
                                       model_max_length=CONTEXT)
    else:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
            ("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                       unk_token="<unk>", model_max_length=CONTEXT)
    fast.save_pretrained(str(directory))


def vocab_size() -> int:
    return len(set(WORDS)) + 4


def hf_text_config(directory: Path) -> Path:
    """A tiny xlm-roberta config directory (config.json only: the CLIP checkpoint holds the weights)."""
    from transformers import XLMRobertaConfig

    XLMRobertaConfig(vocab_size=vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=CONTEXT + 4, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2).save_pretrained(str(directory))
    return directory


def model_cfg(family: str, workdir: Path) -> dict:
    if family == "clip":
        return {"embed_dim": 32, "vision_cfg": dict(_VIT), "text_cfg": dict(_TEXT)}
    if family == "siglip":
        return {"embed_dim": 64, "init_logit_scale": math.log(10), "init_logit_bias": SIGLIP_BIAS, "custom_text": True,
                "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit", "timm_model_pretrained": False,
                               "timm_pool": "map", "timm_proj": "none"},
                "text_cfg": {"context_length": CONTEXT, "vocab_size": vocab_size(), "width": 64, "heads": 2,
                             "layers": 2, "hf_tokenizer_name": "zest-test/tiny-siglip",
                             "tokenizer_kwargs": {"clean": "canonicalize"}, "no_causal_mask": True,
                             "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}
    if family == "hf-text":
        return {"embed_dim": 32, "vision_cfg": dict(_VIT),
                "text_cfg": {"hf_model_name": str(hf_text_config(workdir / "hf-text-config")),
                             "hf_tokenizer_name": "zest-test/tiny-xlmr", "hf_proj_type": "mlp",
                             "hf_pooler_type": "mean_pooler", "context_length": CONTEXT}}
    if family == "coca":
        return {"embed_dim": 32, "custom_text": True,
                "vision_cfg": {**_VIT, "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
                "text_cfg": {**_TEXT, "context_length": CONTEXT, "embed_cls": True, "output_tokens": True},
                "multimodal_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2,
                                   "layers": 1, "attn_pooler_heads": 2}}
    if family == "timm-image":
        return {"embed_dim": 32, "text_cfg": dict(_TEXT),
                "vision_cfg": {"image_size": 64, "timm_model_name": "test_resnet", "timm_model_pretrained": False,
                               "timm_pool": "avg", "timm_proj": "linear"}}
    raise ValueError(family)


def build(family: str, directory: Path, seed: int = 0) -> Path:
    """A local checkpoint directory of `family`'s tiny model (seeded random weights)."""
    from zest.models.loading import save_checkpoint

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model_cfg(family, directory.parent / f"{directory.name}-parts")
    arch = f"ZestFamily-{family}-{directory.name}"
    path = directory.parent / f"{arch}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, load_weights=False, pretrained_text=False)
    if getattr(model, "logit_bias", None) is not None:
        assert abs(float(model.logit_bias.detach()) - SIGLIP_BIAS) < 1e-6
    preprocess = {"mean": [0.5] * 3, "std": [0.5] * 3} if family == "siglip" else {}
    save_checkpoint(model, cfg, directory, preprocess)
    if family == "siglip":
        hf_tokenizer(directory, "siglip")
    elif family == "hf-text":
        hf_tokenizer(directory, "xlmr")
    return directory
