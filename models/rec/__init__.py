"""ZESRec: zero-shot (cold-start) recommendation from item text (Ding et al. 2021, "Zero-Shot Recommender Systems").

An item is represented only by its description: frozen all-MiniLM-L6-v2 text embedding (384-d, unit
norm) -> MLP item tower -> item vector ``v_i`` plus a content bias ``b_i`` (a popularity prior predicted
from the text). A user is a causal Transformer over the item vectors of their chronological history (last
``max_history`` items, learned positions) plus a running mean of those vectors. There are no item-ID
embeddings, so any new item -- or a whole new catalogue -- can be scored.

In-process API (what the BentoML service uses)
-----------------------------------------------
::

    from zest.models.rec import load, save, ZesRec
    from zest.training.rec import movie_text

    rec: ZesRec = load("path/to/model_dir")          # config.json + model.safetensors (+ catalog.*)

    items = rec.embed_items(texts)                    # (n, rec.dim) float32, rows [v_i, b_i]; batched, cached
    user = rec.user_vector(items[history_rows])       # (rec.dim,) = [u, 1]; history oldest -> newest, >= 1 row
    user = rec.user_vector_from_texts(liked_texts)    # same, from free-text descriptions of liked items
    users = rec.user_vectors([h1, h2, ...])           # (n_users, rec.dim), batched
    scores = items @ user                             # == u . v_i + b_i ; higher = better
    idx, top_scores = rec.recommend(user, items, k=10, exclude=history_rows)

    rec.catalog_ids / rec.catalog_texts / rec.catalog_vectors   # training catalogue (or None)
    save(rec, "out_dir")

* Item texts should be written like the training texts; for MovieLens-style items use
  :func:`movie_text` (``"Title (1995). Genres: A, B. Tags: x, y."``; tags are optional).
* ``rec.dim`` = model dim + 1 (the bias column). ``user_vector`` also accepts ``(h, rec.dim - 1)`` rows.
* Only the last ``rec.max_history`` history items are used.
* Bad input raises :class:`models.errors.InvalidInput` (empty history, wrong shape, empty text, NaN);
  a missing/corrupt model directory raises :class:`models.errors.ModelLoadError`.
* Inference is thread-safe; the text encoder caches embeddings of texts it has seen (in memory).
* Inference runs in numpy (``numpy_net.py``): ``load`` and the vectors above import no torch, only the text
  encoder does (MiniLM), the first time it embeds a text. The torch ``ZesRecNet`` is for training.

Training and evaluation live apart, in :mod:`zest.training.rec` (``zest rec train`` / ``zest rec eval``):
serving imports nothing of them.
"""

from typing import TYPE_CHECKING, Any

from .config import ZesRecConfig
from .text import TextEncoder
from .zesrec import ZesRec, load, save

if TYPE_CHECKING:
    from .model import ZesRecNet

__all__ = ["TextEncoder", "ZesRec", "ZesRecConfig", "ZesRecNet", "load", "save"]


def __getattr__(name: str) -> Any:
    """``ZesRecNet`` (the torch network, for training) is imported on first use: serving runs without torch."""
    if name == "ZesRecNet":
        from .model import ZesRecNet

        return ZesRecNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
