"""ZESRec's training side: data loading (`data`), the trainer (`trainer`), baselines, metrics, the cold/warm
benchmark (`evaluation`) and the `zest rec train|eval` command line (`cli`). The model and its in-process
inference are zest.models.rec."""

from .cli import eval_main, train_main, train_zesrec
from .data import (
    Interactions,
    ItemTexts,
    MovieLens,
    load_interactions_csv,
    load_items_csv,
    load_movielens,
    movie_text,
)
from .trainer import TrainConfig

__all__ = [
    "Interactions",
    "ItemTexts",
    "MovieLens",
    "TrainConfig",
    "eval_main",
    "load_interactions_csv",
    "load_items_csv",
    "load_movielens",
    "movie_text",
    "train_main",
    "train_zesrec",
]
