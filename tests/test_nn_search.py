import numpy as np
import pytest

from baselines.nn_search import nearest_neighbours


def brute_force(q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((q[:, None, :].astype(np.float64) - k[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1), np.sqrt(d.min(1))


@pytest.mark.parametrize("key_chunk,query_chunk", [(7, 5), (1000, 1000), (1, 3)])
def test_matches_brute_force_across_chunkings(key_chunk, query_chunk):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(23, 16)).astype(np.float32)
    k = rng.normal(size=(101, 16)).astype(np.float32)
    res = nearest_neighbours(q, k, key_chunk=key_chunk, query_chunk=query_chunk)
    idx, dist = brute_force(q, k)
    np.testing.assert_array_equal(res.index, idx)
    np.testing.assert_allclose(res.distance, dist, rtol=1e-6)


def test_exact_when_float32_expansion_cannot_tell():
    # Large norms, tiny differences: ||q||^2 - 2qk + ||k||^2 in float32 rounds these
    # distances together; the float64 re-rank must still find the true nearest.
    rng = np.random.default_rng(1)
    base = rng.normal(size=64).astype(np.float32) * 1000
    k = np.stack([base + np.float32(0.01) * i * np.eye(64, dtype=np.float32)[i % 64] for i in range(1, 4)])
    q = base[None, :].copy()
    res = nearest_neighbours(q, k)
    assert res.index[0] == brute_force(q, k)[0][0] == 0


def test_ties_go_to_lowest_index():
    k = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    q = np.array([[0.0, 0.0], [1.0, 0.1], [0.1, 1.0]], dtype=np.float32)
    res = nearest_neighbours(q, k, key_chunk=1)
    assert res.index.tolist() == [0, 0, 1]


def test_query_equal_to_a_key_has_distance_zero():
    rng = np.random.default_rng(2)
    k = rng.normal(size=(50, 8)).astype(np.float32)
    res = nearest_neighbours(k[[3, 17, 42]], k)
    assert res.index.tolist() == [3, 17, 42]
    assert np.all(res.distance == 0)


def test_shape_errors():
    with pytest.raises(ValueError, match="equal width"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="no keys"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((0, 3)))
