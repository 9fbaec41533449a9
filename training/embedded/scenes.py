"""Procedural captioned scenes: the training and evaluation data of `zest-tiny`.

A scene is one coloured shape (7 kinds x 6 colours = 42 combinations) on a neutral background,
rendered with random size, position, rotation, texture (plain / striped / dotted), outline,
background (solid, gradient, noise), canvas size, antialiasing, blur, noise and JPEG artefacts,
and captioned with one of many natural phrasings.

Everything is a pure function of a seed: scene `i` of seed `s` is drawn from
`numpy.random.default_rng([s, i])`, so a scene set can be rendered in any order, in parallel,
and reproduced exactly.

Two things are kept out of training on purpose, to measure generalisation:

* `HELDOUT_COMBOS`: 10 shape x colour combinations never rendered nor captioned in training
  (each of their colours and shapes is seen with other partners);
* `SYNONYMS`: alternative words for every colour and shape ("crimson", "box", ...) that no
  training caption uses; evaluation phrases class labels with them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart")

# colour name -> (hue in degrees, hue jitter, saturation range, value range)
COLOURS: dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, 6.0, (0.75, 1.0), (0.65, 0.95)),
    "orange": (28.0, 4.0, (0.8, 1.0), (0.9, 1.0)),
    "yellow": (54.0, 4.0, (0.75, 1.0), (0.9, 1.0)),
    "green": (125.0, 15.0, (0.6, 1.0), (0.5, 0.85)),
    "blue": (222.0, 10.0, (0.65, 1.0), (0.65, 1.0)),
    "purple": (282.0, 10.0, (0.55, 0.9), (0.5, 0.85)),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

ALL_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for s in SHAPES for c in COLOUR_NAMES)
"""Every (colour, shape) class, shape-major: the label set of zero-shot evaluation."""

HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("red", "cross"),
    ("green", "heart"),
    ("green", "square"),
    ("blue", "triangle"),
    ("blue", "hexagon"),
    ("yellow", "circle"),
    ("yellow", "triangle"),
    ("purple", "heart"),
    ("orange", "circle"),
)
"""(colour, shape) combinations that never appear in training, neither as image nor caption."""

TRAIN_COMBOS: tuple[tuple[str, str], ...] = tuple(c for c in ALL_COMBOS if c not in HELDOUT_COMBOS)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "orange": ("tangerine", "apricot"),
    "yellow": ("canary", "golden"),
    "green": ("lime", "olive"),
    "blue": ("navy", "azure"),
    "purple": ("violet", "lavender"),
    "circle": ("ring", "disc"),
    "square": ("box", "tile"),
    "triangle": ("delta", "pyramid"),
    "star": ("asterisk", "pentagram"),
    "hexagon": ("six-sided polygon", "honeycomb"),
    "cross": ("crucifix", "plus sign"),
    "heart": ("valentine", "love symbol"),
}
"""Evaluation-only vocabulary: none of these words is ever used in a training caption.

No word shares a word piece with its canonical word ("starburst", "hexagonal" would leak). The
first synonym, the one evaluation uses, was picked among common alternatives as the one that the
raw pretrained MiniLM itself places nearest its canonical word (text to text, no image model
involved): MiniLM is weak on colour synonyms, and e.g. no yellow synonym tried is nearest
"yellow" for it, so the synonym score measures what the frozen text tower brings, not only the
image tower."""

# Neutral (unsaturated) backgrounds, named with words that are not shape colours.
BACKGROUNDS: dict[str, tuple[tuple[int, int], float]] = {  # name -> (grey level range, max tint)
    "white": ((225, 255), 0.04),
    "light grey": ((175, 215), 0.05),
    "grey": ((115, 160), 0.06),
    "dark grey": ((55, 95), 0.06),
    "black": ((0, 35), 0.05),
    "beige": ((200, 235), 0.0),  # warm tint, handled below
}
BACKGROUND_KINDS: tuple[str, ...] = ("solid", "gradient", "noisy")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")

# independent random streams: evaluation scenes are never training scenes
STREAM_TRAIN, STREAM_EVAL_SEEN, STREAM_EVAL_HELDOUT = 0, 1, 2

_TEMPLATES_PLAIN = (
    "{a} {c} {s}",
    "{c} {s}",
    "a photo of {a} {c} {s}",
    "a picture of {a} {c} {s}",
    "an image of {a} {c} {s}",
    "a drawing of {a} {c} {s}",
    "a rendering of {a} {c} {s}",
    "a simple {c} {s}",
    "{a} {c} {s} shape",
    "{a} {s} coloured {c}",
    "{a} {s} in {c}",
    "the {s} is {c}",
    "a {c} {s} in the picture",
    "there is {a} {c} {s} in the image",
    "a close-up of {a} {c} {s}",
    "a single {c} {s}",
    "this is {a} {c} {s}",
    "a graphic of {a} {c} {s}",
)
_TEMPLATES_DETAIL = (
    "{a} {d} {c} {s}",
    "a photo of {a} {d} {c} {s}",
    "a picture of {a} {d} {c} {s}",
    "{a} {d} {c} {s} on {bga} {bg} background",
    "a photo of {a} {d} {c} {s} on {bga} {bg} background",
    "{a} {c} {s} on {bga} {bg} background",
    "an image of {a} {c} {s} against {bga} {bg} background",
    "{a} {c} {s}{w}",
    "a photo of {a} {c} {s}{w}",
    "{a} {c} {s}{w} on {bga} {bg} background",
)

_VOWEL = re.compile(r"^[aeiou]")


def article(word: str) -> str:
    return "an" if _VOWEL.match(word) else "a"


@dataclass(frozen=True)
class SceneSpec:
    """What a scene shows; the image is a pure function of it (and its `render_seed`)."""

    colour: str
    shape: str
    texture: str
    background: str
    background_kind: str
    size: float  # shape diameter as a fraction of the canvas side
    render_seed: int

    @property
    def combo(self) -> tuple[str, str]:
        return (self.colour, self.shape)

    @property
    def size_word(self) -> str | None:
        if self.size < 0.42:
            return "small"
        if self.size > 0.62:
            return "large"
        return None


@dataclass(frozen=True)
class Scene:
    spec: SceneSpec
    image: Image.Image
    caption: str


# ---------------------------------------------------------------------------------------- geometry

def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _shape_outline(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Polygon of `shape`, centred at 0, fitting in the unit disc, y pointing down."""
    if shape == "circle":
        return _regular(96)
    if shape == "square":
        return _regular(4, np.pi / 4) * 0.92
    if shape == "triangle":
        return _regular(3, -np.pi / 2) * 1.0
    if shape == "hexagon":
        return _regular(6)
    if shape == "star":
        inner = rng.uniform(0.38, 0.5)
        outer = _regular(5, -np.pi / 2)
        inn = _regular(5, -np.pi / 2 + np.pi / 5) * inner
        return np.stack([outer, inn], 1).reshape(-1, 2)
    if shape == "cross":
        w = rng.uniform(0.26, 0.36)
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
               (-w, -w)]
        return np.asarray(pts, dtype=np.float64) * 0.8
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], 1)
        pts -= (pts.max(0) + pts.min(0)) / 2
        return pts / np.abs(pts).max() * 0.95
    raise ValueError(f"unknown shape {shape!r}")


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def sample_colour(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    hue, jitter, sat, val = COLOURS[name]
    return _hsv_to_rgb(hue + rng.uniform(-jitter, jitter), rng.uniform(*sat), rng.uniform(*val))


def _background_rgb(name: str, rng: np.random.Generator) -> np.ndarray:
    levels, tint = BACKGROUNDS[name]
    g = rng.uniform(*levels)
    if name == "beige":
        return np.array([g, g * 0.93, g * 0.8])
    return np.clip(g + g * rng.uniform(-tint, tint, 3), 0, 255)


# ---------------------------------------------------------------------------------------- rendering

def _background(spec: SceneSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    base = _background_rgb(spec.background, rng)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if spec.background_kind == "gradient":
        other = np.clip(base + rng.uniform(-70, 70), 0, 255)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        img = img * (1 - ramp[..., None]) + other * ramp[..., None]
    elif spec.background_kind == "noisy":
        sigma = rng.uniform(8, 30)
        coarse = max(2, size // int(rng.integers(2, 16)))
        noise = rng.normal(0, sigma, (coarse, coarse, 1 if rng.random() < 0.6 else 3)).astype(np.float32)
        noise_img = Image.fromarray(np.clip(noise[..., 0] + 128 if noise.shape[2] == 1 else noise + 128, 0, 255)
                                    .astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
        n = np.asarray(noise_img, dtype=np.float32) - 128
        img = img + (n[..., None] if n.ndim == 2 else n) + rng.normal(0, sigma / 3, (size, size, 1))
    return np.clip(img, 0, 255)


def _texture_layer(spec: SceneSpec, fill: tuple[int, int, int], size: int, rng: np.random.Generator) -> Image.Image:
    layer = Image.new("RGB", (size, size), fill)
    if spec.texture == "plain":
        return layer
    f = np.asarray(fill, dtype=np.float64)
    if rng.random() < 0.5:
        other = f * rng.uniform(0.35, 0.6)  # darker shade of the same hue
    else:
        other = f + (255 - f) * rng.uniform(0.45, 0.7)  # lighter shade
    other_rgb = tuple(int(x) for x in np.clip(other, 0, 255))
    draw = ImageDraw.Draw(layer)
    if spec.texture == "striped":
        period = size * rng.uniform(0.06, 0.14)
        width = period * rng.uniform(0.35, 0.55)
        angle = rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        n = np.array([-d[1], d[0]])
        c = np.array([size / 2, size / 2])
        k = int(size / period) + 2
        for i in range(-k, k + 1):
            o = c + n * i * period
            p = [o - d * size, o + d * size, o + d * size + n * width, o - d * size + n * width]
            draw.polygon([tuple(x) for x in p], fill=other_rgb)
    else:  # dotted
        period = size * rng.uniform(0.07, 0.13)
        radius = period * rng.uniform(0.2, 0.35)
        off = rng.uniform(0, period, 2)
        for y in np.arange(-period + off[1], size + period, period):
            for x in np.arange(-period + off[0], size + period, period):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=other_rgb)
    return layer


def render(spec: SceneSpec) -> Image.Image:
    """Render `spec` as an RGB image (square, 48-256 px a side)."""
    rng = np.random.default_rng(spec.render_seed)
    out = int(rng.choice([48, 64, 80, 96, 112, 128, 160, 192, 224, 256]))
    ss = int(rng.choice([1, 2, 3], p=[0.25, 0.35, 0.4]))  # supersampling of the shape: 1 = aliased edges
    canvas = out * ss
    fill = sample_colour(spec.colour, rng)

    pts = _shape_outline(spec.shape, rng)
    rot = rng.uniform(-45, 45) if spec.shape == "heart" else rng.uniform(0, 360)
    th = np.deg2rad(rot)
    rmat = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    aspect = np.array([1.0, 1.0]) if spec.shape in ("circle", "square") else 1 + rng.uniform(-0.08, 0.08, 2)
    radius = spec.size * canvas / 2
    centre = rng.uniform(radius * 1.02, canvas - radius * 1.02, 2) if canvas > 2.04 * radius else np.full(2, canvas / 2)
    poly = (pts * aspect) @ rmat.T * radius + centre
    poly_list = [tuple(p) for p in poly]

    # the shape (texture + optional outline) and its mask, drawn supersampled then reduced
    mask = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(mask).polygon(poly_list, fill=255)
    layer = _texture_layer(spec, fill, canvas, rng)
    if rng.random() < 0.3:  # thin outline in a darker shade
        shade = tuple(int(x * rng.uniform(0.3, 0.6)) for x in fill)
        width = max(1, int(canvas * 0.012))
        ImageDraw.Draw(layer).line(poly_list + [poly_list[0]], fill=shade, width=width)
        ImageDraw.Draw(mask).line(poly_list + [poly_list[0]], fill=255, width=width)
    if ss > 1:
        method = Image.Resampling.LANCZOS if rng.random() < 0.5 else Image.Resampling.BOX
        layer, mask = layer.resize((out, out), method), mask.resize((out, out), method)

    bg = _background(spec, out, rng)
    if rng.random() < 0.25:  # soft vignette
        yy, xx = np.mgrid[0:out, 0:out] / out - 0.5
        bg = bg * (1 - rng.uniform(0.1, 0.35) * (xx ** 2 + yy ** 2) * 2)[..., None]
    a = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    arr = np.asarray(layer, dtype=np.float32) * a + bg * (1 - a)
    if rng.random() < 0.4:
        arr = arr + rng.normal(0, rng.uniform(2, 10), (out, out, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(40, 95)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


# ---------------------------------------------------------------------------------------- captions

def caption(spec: SceneSpec, rng: np.random.Generator) -> str:
    """One natural caption of `spec` (only training vocabulary: never a word of `SYNONYMS`)."""
    c, s = spec.colour, spec.shape
    details = []
    if spec.texture != "plain":
        details.append(spec.texture)
    if spec.size_word:
        details.append(spec.size_word if rng.random() < 0.5 else {"small": "little", "large": "big"}[spec.size_word])
    if rng.random() < 0.4 or not details:
        template = _TEMPLATES_PLAIN[int(rng.integers(len(_TEMPLATES_PLAIN)))]
    else:
        template = _TEMPLATES_DETAIL[int(rng.integers(len(_TEMPLATES_DETAIL)))]
    d = details[int(rng.integers(len(details)))] if details else ""
    with_ = {"striped": " with stripes", "dotted": " with dots"}.get(spec.texture, "")
    if "{w}" in template and not with_:
        template = "{a} {c} {s} on {bga} {bg} background"
    bg = spec.background
    if spec.background_kind != "solid" and rng.random() < 0.6:
        bg = f"{spec.background_kind} {bg}" if rng.random() < 0.5 else spec.background_kind
    text = template.format(a="a", c=c, s=s, d=d, bg=bg, bga="a", w=with_)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\ba ([aeiou])", r"an \1", text)
    text = re.sub(r"\ban ([^aeiou\s])", r"a \1", text)
    if rng.random() < 0.2:
        text = text[0].upper() + text[1:] + "."
    return text


def caption_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# ---------------------------------------------------------------------------------------- sampling

def _combos(split: str) -> Sequence[tuple[str, str]]:
    if split == "train":
        return TRAIN_COMBOS
    if split == "heldout":
        return HELDOUT_COMBOS
    if split == "all":
        return ALL_COMBOS
    raise ValueError(f"unknown split {split!r}: train, heldout or all")


def sample_spec(seed: int, index: int, combos: Sequence[tuple[str, str]], stream: int = 0) -> SceneSpec:
    """Scene `index` of (`seed`, `stream`); streams keep training and evaluation sets apart."""
    rng = np.random.default_rng([seed, stream, index])
    colour, shape = combos[index % len(combos)] if len(combos) else (None, None)
    return SceneSpec(
        colour=colour,
        shape=shape,
        texture=TEXTURES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))],
        background=tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))],
        background_kind=BACKGROUND_KINDS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))],
        size=float(rng.uniform(0.3, 0.8)),
        render_seed=int(rng.integers(2 ** 63 - 1)),
    )


def make_specs(seed: int, n: int, split: str = "train", stream: int = STREAM_TRAIN) -> list[SceneSpec]:
    """`n` scene specs of `split`, cycling through its combinations (balanced classes)."""
    combos = _combos(split)
    return [sample_spec(seed, i, combos, stream) for i in range(n)]


def make_scene(spec: SceneSpec, caption_seed: int | None = None) -> Scene:
    rng = np.random.default_rng([spec.render_seed, 1 if caption_seed is None else caption_seed + 2])
    return Scene(spec=spec, image=render(spec), caption=caption(spec, rng))


def make_scenes(seed: int, n: int, split: str = "train", stream: int = STREAM_TRAIN) -> list[Scene]:
    """`n` rendered, captioned scenes; the same arguments always give the same scenes."""
    return [make_scene(spec) for spec in make_specs(seed, n, split, stream)]
