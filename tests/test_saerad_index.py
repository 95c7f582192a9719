"""Feature index: streaming top-k equals a brute-force sort; statistics; save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.records import Sample
from bench.errors import BenchError, DataError
from saerad.features.index import build_index, index_exists, load_index, streaming_topk
from saerad.sae import create_sae


def _sae(d_in: int = 8, d_sae: int = 48, seed: int = 0):
    sae = create_sae("hybrid-gated", d_in=d_in, d_sae=d_sae, seed=seed)
    with torch.no_grad():  # random biases and decoder norms so that features differ in sparsity
        g = torch.Generator().manual_seed(seed + 1)
        sae.b_gate.copy_(torch.randn(d_sae, generator=g) * 0.8 - 0.3)
        sae.b_gate[: d_sae // 6] = -2.5  # rare features: fewer firings than k
        sae.b_mag.copy_(torch.randn(d_sae, generator=g) * 0.2)
        sae.W_dec.mul_(torch.rand(d_sae, generator=g) + 0.5)
        sae.set_scale(1.3)
    return sae


def _brute(sae, tokens: np.ndarray, k: int):
    f = sae.feature_activations(torch.as_tensor(tokens)).detach().numpy().astype(np.float64)
    idx = np.full((f.shape[1], k), -1)
    act = np.zeros((f.shape[1], k))
    for i in range(f.shape[1]):
        order = np.argsort(-f[:, i], kind="stable")
        order = order[f[order, i] > 0][:k]
        idx[i, : len(order)] = order
        act[i, : len(order)] = f[order, i]
    return f, idx, act


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_streaming_topk_equals_brute_force(chunk):
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(203, 8)).astype(np.float32)
    sae = _sae()
    r = streaming_topk(sae, tokens, k=5, chunk_size=chunk)
    f, idx, act = _brute(sae, tokens, 5)
    np.testing.assert_array_equal(r["top_index"], idx)
    np.testing.assert_allclose(r["top_act"], act, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r["count"], (f > 0).sum(0))
    np.testing.assert_allclose(r["max_act"], f.max(0), rtol=1e-5)
    np.testing.assert_allclose(r["sum_act"], f.sum(0), rtol=1e-5)
    # The random SAE must exercise both cases: features with fewer than k firings, and more.
    counts = (f > 0).sum(0)
    assert (counts < 5).any() and (counts > 5).any()


def test_ties_go_to_the_earlier_image():
    tokens = np.tile(np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32), (9, 1))
    sae = _sae()
    # Chunks of equal size: a matrix product over 1 row and over 2 rows may round differently,
    # which would break the exact ties this test is about; three chunks of 3 keep them exact.
    r = streaming_topk(sae, tokens, k=3, chunk_size=3)
    firing = r["count"] > 0
    assert firing.any()
    np.testing.assert_array_equal(r["top_index"][firing], np.tile([0, 1, 2], (firing.sum(), 1)))


def _samples(n: int) -> list[Sample]:
    return [Sample(id=f"d{i}", dicom_id=f"d{i}", study_id=f"s{i}", subject_id=f"p{i}", split="train",
                   view="PA", image_path=Path(f"/img/d{i}.jpg"), findings=f"report {i}") for i in range(n)]


def test_build_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(120, 8)).astype(np.float32)
    sae = _sae()
    samples = _samples(120)
    idx = build_index(sae, tokens, samples, k=4, chunk_size=33, meta={"note": "x"})
    f, top, _ = _brute(sae, tokens, 4)
    feat = int(np.argmax((f > 0).sum(0)))
    assert idx.top_reports(feat) == [f"report {j}" for j in top[feat] if j >= 0]
    st = idx.stats(feat)
    active = f[:, feat][f[:, feat] > 0]
    assert st["frequency"] == pytest.approx(len(active) / 120)
    assert st["mean_active"] == pytest.approx(active.mean(), rel=1e-5)
    assert st["max"] == pytest.approx(active.max(), rel=1e-5)
    idx.save(tmp_path)
    assert index_exists(tmp_path)
    back = load_index(tmp_path)
    np.testing.assert_array_equal(back.top_index, idx.top_index)
    assert back.top(feat)[0][0]["dicom_id"] == f"d{top[feat][0]}"
    assert back.meta["note"] == "x" and back.k == 4 and back.n_images == 120
    with pytest.raises(BenchError, match="does not exist"):
        back.top(10_000)


def test_bad_inputs_are_clear_errors(tmp_path):
    sae = _sae()
    with pytest.raises(DataError, match="dimensions"):
        streaming_topk(sae, np.zeros((3, 5), np.float32))
    with pytest.raises(DataError, match="aligned"):
        build_index(sae, np.zeros((3, 8), np.float32), _samples(2))
    with pytest.raises(DataError, match="no feature index"):
        load_index(tmp_path)
