import numpy as np
import pytest

from zest.models.topk import top_k_indices


def test_best_first_ties_to_lower_index_1d_and_2d():
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.0])
    assert top_k_indices(s, 3).tolist() == [3, 1, 2]
    assert top_k_indices(np.stack([s, -s]), 2).tolist() == [[3, 1], [4, 0]]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [0, 1, 4, 5, 50])
def test_matches_a_full_stable_sort(k, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, size=(7, 5)).astype(float)  # many ties, also at the k-th place
    expect = np.argsort(-s, axis=1, kind="stable")[:, :k]
    assert top_k_indices(s, k).tolist() == expect.tolist()
