"""zest: multimodal zero-shot inference (CLIP zero-shot classification and embeddings, a cold-start
recommender) served with BentoML.

Everything importable lives under this one name:

    zest.models    CLIP encoders, zero-shot classifier, the embedded zest-tiny model, the recommender
    zest.prompts   prompt template sets
    zest.service   the BentoML services, settings and the `zest` command line
    zest.training  training and evaluation (zest-tiny, the recommender); serving never imports it

In an installed wheel these are sub-directories of this package (setuptools' ``package-dir`` in
pyproject.toml maps them). In a source tree -- a checkout, or the ``src/`` of a bento -- they are the
repository's top-level folders ``models/``, ``prompts/``, ``service/`` and ``training/`` beside this one, so the
package's search path is extended to the repository root there. Either way ``import zest.models`` is the
same code, and nothing is ever importable as a bare ``models``, ``service`` or ``prompts``.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

_SUBPACKAGES = ("models", "prompts", "service")
_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "models")):  # a source tree, not an installed wheel
    _root = _os.path.dirname(_here)
    if all(_os.path.isfile(_os.path.join(_root, p, "__init__.py")) for p in _SUBPACKAGES):
        __path__.append(_root)  # noqa: F821 - the package's own search path
del _here
