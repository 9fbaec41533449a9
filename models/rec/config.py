"""The ZESRec network's configuration (``config.json``'s ``"model"``), apart from the torch network so that
inference (models/rec/numpy_net.py) reads it without importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import InvalidInput


@dataclass
class ZesRecConfig:
    text_dim: int = 384
    hidden: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    text_dropout: float = 0.5  # dropout on the frozen text embedding entering the item tower (regularises it)
    use_bias: bool = True
    bias_from_text: bool = True  # content bias linear in the text embedding (ridge-like) instead of the MLP
    linear_skip: bool = True  # add a linear path text -> item vector / bias next to the MLP
    use_mean: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ZesRecConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidInput(f"unknown ZESRec config keys: {sorted(unknown)}")
        return cls(**d)
