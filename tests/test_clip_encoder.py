import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from zest.models.clip_encoder import ClipEncoder, autocast_dtype, pick_device
from zest.models.errors import ModelLoadError
from zest.models.spec import parse_spec


def _image(seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_features_are_unit_norm_float32(tiny_encoder):
    imgs = [_image(i) for i in range(6)]  # more than batch_size=4: exercises batching
    f = tiny_encoder.encode_images(imgs)
    t = tiny_encoder.encode_texts(["a cat", "a dog", "x" * 2000])  # long text is truncated, not an error
    assert f.dtype == np.float32 and f.shape == (6, tiny_encoder.dim)
    assert t.dtype == np.float32 and t.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert tiny_encoder.encode_images([]).shape == (0, 32)


def test_matches_open_clip_reference(tiny_checkpoint, tiny_encoder):
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_checkpoint}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_checkpoint}")
    model.eval()
    imgs = [_image(i) for i in range(5)]
    texts = ["a photo of a cat.", "a photo of a dog."]
    with torch.no_grad():
        ref_img = model.encode_image(torch.stack([preprocess(im) for im in imgs]), normalize=True).numpy()
        ref_txt = model.encode_text(tokenizer(texts), normalize=True).numpy()
    np.testing.assert_allclose(tiny_encoder.encode_images(imgs), ref_img, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode_texts(texts), ref_txt, atol=1e-5)
    assert tiny_encoder.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert tiny_encoder.context_length == 77


def test_preprocessing_is_the_models_own(tiny_encoder):
    """The transform is open_clip's (bicubic, CLIP mean/std); a nearest-neighbour resize differs."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    img = _image(3, size=(97, 61))
    ours = tiny_encoder.preprocess([img])[0]
    cfg = tiny_encoder.preprocess_cfg
    assert cfg["interpolation"] == "bicubic"
    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)(img)
    size = tiny_encoder.image_size
    nearest = T.Compose([T.Resize(size[0], interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(size),
                         T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])(img)
    bilinear = image_transform_v2(PreprocessCfg(**{**cfg, "interpolation": "bilinear"}), is_train=False)(img)
    torch.testing.assert_close(ours, reference, atol=0, rtol=0)
    assert not torch.allclose(ours, nearest, atol=1e-3)
    assert not torch.allclose(ours, bilinear, atol=1e-3)
    feats = tiny_encoder.encode_pixels(torch.stack([ours, nearest]))
    assert not np.allclose(feats[0], feats[1], atol=1e-4)


def test_the_api_builds_the_encoders_transform_from_its_config_alone(tiny_encoder):
    """The public API does not load the model: from the preprocess config the encoder service reports (as JSON,
    lists for tuples) it builds the same transform, pixel for pixel."""
    import json

    from zest.models.transform import eval_transform
    from zest.service.pipeline import EncoderInfo

    img = _image(5, size=(70, 90))
    cfg = json.loads(json.dumps(EncoderInfo.of(tiny_encoder).preprocess_cfg))
    torch.testing.assert_close(eval_transform(cfg)(img), tiny_encoder.preprocess([img])[0], atol=0, rtol=0)

def test_local_checkpoint_round_trip(tiny_checkpoint, tiny_encoder, tmp_path):
    from tests.conftest import TINY_CFG
    from zest.models.loading import save_checkpoint

    again = ClipEncoder.from_spec(tiny_checkpoint, device="cpu")  # a bare path works too
    imgs = [_image(7)]
    np.testing.assert_allclose(again.encode_images(imgs), tiny_encoder.encode_images(imgs), atol=1e-6)
    copy_dir = save_checkpoint(again.model, TINY_CFG, tmp_path / "copy", again.preprocess_cfg)
    third = ClipEncoder.from_spec(f"local-dir:{copy_dir}", device="cpu")
    np.testing.assert_allclose(third.encode_texts(["hi"]), tiny_encoder.encode_texts(["hi"]), atol=1e-6)
    assert third.model_id == f"local-dir:{copy_dir}"


def test_arch_with_weights_file(tiny_arch, tiny_checkpoint, tiny_encoder):
    enc = ClipEncoder.from_spec(f"{tiny_arch}/{tiny_checkpoint}/open_clip_model.safetensors", device="cpu")
    np.testing.assert_allclose(enc.encode_texts(["x"]), tiny_encoder.encode_texts(["x"]), atol=1e-6)


def test_spec_parsing():
    assert parse_spec("ViT-B-32/laion2b_s34b_b79k").model_id == "ViT-B-32/laion2b_s34b_b79k"
    assert parse_spec("hf-hub:laion/CLIP-ViT-B-32").kind == "hf-hub"
    assert parse_spec("zest-tiny").kind == "zest"
    assert parse_spec("local-dir:./x").kind == "local-dir"


@pytest.mark.parametrize("spec, message", [
    ("ViT-B-32", "names no weights"),
    ("NoSuchArch/random", "unknown open_clip architecture"),
    ("ViT-B-32/not-a-tag", "neither a pretrained tag"),
    ("local-dir:/nonexistent/dir", "no open_clip_config.json"),
    ("", "empty model spec"),
])
def test_bad_specs_give_one_clear_error(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        ClipEncoder.from_spec(spec, device="cpu")


def test_missing_weights_offline_say_what_to_do():
    # HF_HUB_OFFLINE=1 (conftest): the real tag resolves, the download cannot happen.
    with pytest.raises(ModelLoadError) as err:
        ClipEncoder.from_spec("ViT-B-32/laion2b_s34b_b79k", device="cpu")
    text = str(err.value)
    assert "ViT-B-32/laion2b_s34b_b79k" in text and "local checkpoint" in text
    with pytest.raises(ModelLoadError, match="local checkpoint"):
        ClipEncoder.from_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", device="cpu")


def test_device_and_precision_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cpu"), "auto") is None  # fp32 on CPU by default
    assert autocast_dtype(torch.device("cuda"), "fp16") == torch.float16
    with pytest.raises(ModelLoadError):
        autocast_dtype(torch.device("cpu"), "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA"):
            pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_matches_cpu(tiny_checkpoint, tiny_encoder):
    gpu = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cuda")
    assert gpu._autocast_dtype in (torch.bfloat16, torch.float16)
    imgs = [_image(i) for i in range(3)]
    out = gpu.encode_images(imgs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(out, tiny_encoder.encode_images(imgs), atol=5e-2)
