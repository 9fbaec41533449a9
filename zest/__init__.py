"""zest: multimodal zero-shot inference (CLIP zero-shot classification and embeddings, a cold-start
recommender) served with BentoML.

Everything importable lives under this one name. Its subpackages are the symbolic links in this folder
(``zest/models -> ../models`` and so on), which keep the code in the repository's top-level folders: the
one list of subpackages is that set of links (setuptools' ``find_packages`` follows them into the wheel).
"""

from __future__ import annotations

__version__ = "0.1.0"
