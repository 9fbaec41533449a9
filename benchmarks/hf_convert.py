"""Convert an open_clip ViT CLIP (e.g. ViT-B-32) to a Hugging Face `transformers.CLIPModel`, offline.

The benchmark compares zest with the "usual alternative" on the *same* architecture and weights, so
this module builds, entirely from what is on this machine:

- a `CLIPModel` whose state dict is a renaming of the open_clip one (q/k/v split out of `in_proj`,
  projections transposed), with `hidden_act="gelu"` for non-QuickGELU models;
- a `CLIPTokenizer` from vocab.json/merges.txt generated from open_clip's own BPE file
  (`open_clip/bpe_simple_vocab_16e6.txt.gz`, built exactly as `open_clip.tokenizer.SimpleTokenizer` does);
- a `CLIPImageProcessor` from the model's open_clip preprocess config;

and saves them in one directory that `CLIPModel.from_pretrained(dir)` and
`pipeline("zero-shot-image-classification", model=dir)` load like any hub checkpoint.

Run it alone to check parity (it prints the max abs differences)::

    python3 benchmarks/hf_convert.py                      # ViT-B-32 with random weights
    python3 benchmarks/hf_convert.py --model ViT-B-32/random --out /tmp/hf-vit-b-32
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL.Image.Resampling values


class NotConvertible(ValueError):
    """The open_clip model has no `transformers.CLIPModel` equivalent (architecture or activation)."""


# ------------------------------------------------------------------------------------------ config
def _is_quick_gelu(block: torch.nn.Module) -> bool:
    act = getattr(block.mlp, "gelu", None)
    return type(act).__name__ == "QuickGELU"


def hf_config(model: torch.nn.Module):
    """A `CLIPConfig` describing `model` (an `open_clip.model.CLIP` with a `VisionTransformer`)."""
    from open_clip.model import CLIP
    from open_clip.transformer import VisionTransformer
    from transformers import CLIPConfig

    if not isinstance(model, CLIP) or not isinstance(model.visual, VisionTransformer):
        raise NotConvertible(
            f"{type(model).__name__} with a {type(model.visual).__name__} image tower: transformers.CLIPModel "
            "only has a ViT image tower and a CLIP text transformer")
    vis, txt = model.visual, model.transformer
    v0, t0 = vis.transformer.resblocks[0], txt.resblocks[0]
    if _is_quick_gelu(v0) != _is_quick_gelu(t0):
        raise NotConvertible("image and text towers use different GELU variants")
    if getattr(vis, "pool_type", "tok") != "tok" or getattr(vis, "final_ln_after_pool", False):
        raise NotConvertible("only class-token pooling with ln_post before pooling maps to CLIPVisionTransformer")
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        raise NotConvertible("only argmax (EOT) text pooling maps to CLIPTextTransformer")
    layer_scale = type(getattr(v0, "ls_1", torch.nn.Identity())).__name__ != "Identity"
    if getattr(vis, "attn_pool", None) is not None or layer_scale:
        raise NotConvertible("attentional pooling / layer scale have no CLIPModel equivalent")
    act = "quick_gelu" if _is_quick_gelu(v0) else "gelu"
    patch = vis.conv1.kernel_size[0]
    image_size = vis.image_size[0] if isinstance(vis.image_size, (tuple, list)) else vis.image_size
    embed_dim = vis.proj.shape[1]
    text_cfg = dict(
        vocab_size=model.token_embedding.num_embeddings, hidden_size=txt.width,
        intermediate_size=t0.mlp.c_fc.out_features, num_hidden_layers=txt.layers,
        num_attention_heads=t0.attn.num_heads, max_position_embeddings=model.positional_embedding.shape[0],
        hidden_act=act, layer_norm_eps=t0.ln_1.eps, projection_dim=embed_dim,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    vision_cfg = dict(
        hidden_size=vis.transformer.width, intermediate_size=v0.mlp.c_fc.out_features,
        num_hidden_layers=vis.transformer.layers, num_attention_heads=v0.attn.num_heads,
        image_size=image_size, patch_size=patch, hidden_act=act, layer_norm_eps=v0.ln_1.eps,
        projection_dim=embed_dim,
    )
    return CLIPConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=embed_dim,
                      logit_scale_init_value=float(model.logit_scale.detach()))


# ------------------------------------------------------------------------------------ state dict
def _blocks(sd: dict[str, torch.Tensor], src: str, dst: str, layers: int) -> dict[str, torch.Tensor]:
    """Map open_clip residual blocks `src.{i}.*` to HF encoder layers `dst.{i}.*`."""
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        q, k, v = sd[f"{s}.attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = sd[f"{s}.attn.in_proj_bias"].chunk(3, dim=0)
        out.update({
            f"{d}.self_attn.q_proj.weight": q, f"{d}.self_attn.q_proj.bias": qb,
            f"{d}.self_attn.k_proj.weight": k, f"{d}.self_attn.k_proj.bias": kb,
            f"{d}.self_attn.v_proj.weight": v, f"{d}.self_attn.v_proj.bias": vb,
            f"{d}.self_attn.out_proj.weight": sd[f"{s}.attn.out_proj.weight"],
            f"{d}.self_attn.out_proj.bias": sd[f"{s}.attn.out_proj.bias"],
            f"{d}.layer_norm1.weight": sd[f"{s}.ln_1.weight"], f"{d}.layer_norm1.bias": sd[f"{s}.ln_1.bias"],
            f"{d}.layer_norm2.weight": sd[f"{s}.ln_2.weight"], f"{d}.layer_norm2.bias": sd[f"{s}.ln_2.bias"],
            f"{d}.mlp.fc1.weight": sd[f"{s}.mlp.c_fc.weight"], f"{d}.mlp.fc1.bias": sd[f"{s}.mlp.c_fc.bias"],
            f"{d}.mlp.fc2.weight": sd[f"{s}.mlp.c_proj.weight"], f"{d}.mlp.fc2.bias": sd[f"{s}.mlp.c_proj.bias"],
        })
    return out


def convert_state_dict(sd: dict[str, torch.Tensor], vision_layers: int, text_layers: int) -> dict[str, torch.Tensor]:
    """open_clip CLIP state dict -> `transformers.CLIPModel` state dict (tensors are shared, not copied)."""
    out = {
        # vision tower
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T.contiguous(),
        # text tower
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T.contiguous(),
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    out.update(_blocks(sd, "visual.transformer.resblocks", "vision_model.encoder.layers", vision_layers))
    out.update(_blocks(sd, "transformer.resblocks", "text_model.encoder.layers", text_layers))
    return out


def to_hf_model(model: torch.nn.Module):
    """A `transformers.CLIPModel` with exactly `model`'s weights (eval mode, fp32)."""
    from transformers import CLIPModel

    config = hf_config(model)
    hf = CLIPModel(config).eval()
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    converted = convert_state_dict(sd, config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers)
    missing, unexpected = hf.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]  # buffers, not weights
    if missing or unexpected:
        raise RuntimeError(f"conversion incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hf


# ------------------------------------------------------------------------- tokenizer + processor
def open_clip_bpe() -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) exactly as `open_clip.tokenizer.SimpleTokenizer` builds them, HF-named specials."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer_files(directory: Path) -> None:
    vocab, merges = open_clip_bpe()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tokenizer(directory: Path, context_length: int):
    """A CLIP tokenizer over open_clip's vocabulary, loaded from generated vocab.json/merges.txt the way
    a user loads one (tokenizers-backed `CLIPTokenizerFast` on transformers 4.x, `CLIPTokenizer` on 5.x)."""
    import transformers

    write_tokenizer_files(directory)
    cls = transformers.CLIPTokenizer if transformers.__version__.split(".")[0] >= "5" else transformers.CLIPTokenizerFast
    return cls.from_pretrained(str(directory), model_max_length=context_length)


def build_image_processor(preprocess_cfg: dict):
    """`CLIPImageProcessor` equivalent of open_clip's eval transform (resize shortest side, centre crop)."""
    from transformers import CLIPImageProcessor

    size = preprocess_cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    if preprocess_cfg.get("resize_mode", "shortest") != "shortest":
        raise NotConvertible(f"resize_mode {preprocess_cfg['resize_mode']!r} has no CLIPImageProcessor equivalent")
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": size},
        resample=RESAMPLE[preprocess_cfg.get("interpolation", "bicubic")],
        do_center_crop=True, crop_size={"height": size, "width": size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(preprocess_cfg.get("mean")), image_std=list(preprocess_cfg.get("std")),
        do_convert_rgb=True,
    )


def save_hf_clip(model: torch.nn.Module, preprocess_cfg: dict, directory: str | Path):
    """Write model + tokenizer + image processor to `directory`; return the in-memory `CLIPModel`."""
    from transformers import CLIPProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf = to_hf_model(model)
    hf.save_pretrained(directory)
    tokenizer = build_tokenizer(directory, hf.config.text_config.max_position_embeddings)
    processor = CLIPProcessor(image_processor=build_image_processor(preprocess_cfg), tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return hf


# ---------------------------------------------------------------------------------------- parity
@dataclass
class Parity:
    image_max_abs_diff: float
    image_max_abs: float
    text_max_abs_diff: float
    text_max_abs: float
    token_ids_equal: bool
    pixels_max_abs_diff: float  # open_clip transform vs CLIPImageProcessor on the same PIL images
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.image_max_abs_diff <= self.tolerance and self.text_max_abs_diff <= self.tolerance \
            and self.token_ids_equal

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _features(out) -> torch.Tensor:
    """transformers 4.x returns a tensor from get_*_features, 5.x a model output with pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.inference_mode()
def check_parity(model: torch.nn.Module, hf, tokenizer, image_processor, preprocess,
                 tolerance: float = 1e-4, seed: int = 0) -> Parity:
    """Compare unnormalised features of open_clip and HF on the same inputs."""
    import open_clip
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    size = hf.config.vision_config.image_size
    pixels = torch.randn(4, 3, size, size, generator=g)
    img_diff = (model.encode_image(pixels) - _features(hf.get_image_features(pixel_values=pixels))).abs()
    img_ref = model.encode_image(pixels).abs().max()

    texts = ["a photo of a cat.", "a blurry photo of a dog.", "an origami golden retriever, 2024!",
             "It's the BEST   photo of a café."]
    oc_ids = open_clip.get_tokenizer("ViT-B-32")(texts)
    hf_ids = tokenizer(texts, padding="max_length", max_length=oc_ids.shape[1], truncation=True,
                       return_tensors="pt")
    # open_clip pads with 0 and HF with EOS; compare only up to each text's EOT
    eot = oc_ids.argmax(dim=-1)
    same_ids = all(torch.equal(oc_ids[i, :eot[i] + 1], hf_ids["input_ids"][i, :eot[i] + 1]) for i in range(len(texts)))
    oc_txt = model.encode_text(oc_ids)
    hf_txt = _features(hf.get_text_features(**hf_ids))
    txt_diff = (oc_txt - hf_txt).abs()

    rng = torch.Generator().manual_seed(seed + 1)
    imgs = [Image.fromarray((torch.rand(h, w, 3, generator=rng) * 255).byte().numpy())
            for h, w in ((480, 640), (300, 200))]
    oc_px = torch.stack([preprocess(im) for im in imgs])
    hf_px = image_processor(images=imgs, return_tensors="pt")["pixel_values"]
    return Parity(float(img_diff.max()), float(img_ref), float(txt_diff.max()), float(oc_txt.abs().max()),
                  bool(same_ids), float((oc_px - hf_px).abs().max()), tolerance)


# ------------------------------------------------------------------------------------------- CLI
def load_open_clip_model(spec: str):
    """(model, preprocess transform, preprocess_cfg) for a zest model spec, via zest's own loader."""
    from zest.models.factory import load_clip
    from zest.models.spec import parse_spec

    loaded = load_clip(parse_spec(spec), torch.device("cpu"))
    return loaded.model.eval(), loaded.preprocess, loaded.preprocess_cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-32/random", help="zest model spec of an open_clip ViT CLIP")
    ap.add_argument("--out", default=None, help="directory to save the HF model in (default: a temp dir)")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args(argv)

    model, preprocess, cfg = load_open_clip_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        hf = save_hf_clip(model, cfg, out)
        from transformers import CLIPProcessor

        processor = CLIPProcessor.from_pretrained(out)  # what a user would load
        parity = check_parity(model, hf, processor.tokenizer, processor.image_processor, preprocess,
                              tolerance=args.tolerance)
    print(f"model {args.model} -> transformers.CLIPModel ({hf.config.vision_config.hidden_act})")
    print(f"image features: max |open_clip - HF| = {parity.image_max_abs_diff:.3e} "
          f"(max |feature| {parity.image_max_abs:.3g})")
    print(f"text features:  max |open_clip - HF| = {parity.text_max_abs_diff:.3e} "
          f"(max |feature| {parity.text_max_abs:.3g})")
    print(f"token ids equal to open_clip's: {parity.token_ids_equal}")
    print(f"pixels (open_clip transform vs CLIPImageProcessor): max abs diff {parity.pixels_max_abs_diff:.3e}")
    print("PARITY OK" if parity.ok else f"PARITY FAILED (tolerance {args.tolerance})")
    return 0 if parity.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
