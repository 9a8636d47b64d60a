"""sugar.align against tslearn (test-only oracle) on variable-length data, fixed sigma."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sugar import align

tslearn_metrics = pytest.importorskip("tslearn.metrics")
pytestmark = pytest.mark.oracle


def _data(lengths: list[int], dim: int = 3, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(n, dim)) for n in lengths]
    padded = np.full((len(lengths), max(lengths), dim), np.nan)  # tslearn pads with NaN
    for b, s in enumerate(seqs):
        padded[b, : len(s)] = s
    return seqs, padded


def _t(seqs: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.tensor(s) for s in seqs]


def test_gak_and_cdist_gak() -> None:
    xs, xp = _data([4, 1, 7, 3])
    ys, yp = _data([2, 5, 6], seed=1)
    for a in xs:
        for b in ys:
            ours = float(align.gak(torch.tensor(a), torch.tensor(b), sigma=1.7))
            assert ours == pytest.approx(float(tslearn_metrics.gak(a, b, sigma=1.7)), rel=1e-10)
    ours_m = align.cdist_gak(_t(xs), _t(ys), sigma=1.7).numpy()
    np.testing.assert_allclose(ours_m, tslearn_metrics.cdist_gak(xp, yp, sigma=1.7), rtol=1e-10)
    ours_self = align.cdist_gak(_t(xs), sigma=0.8).numpy()
    np.testing.assert_allclose(ours_self, tslearn_metrics.cdist_gak(xp, sigma=0.8), rtol=1e-10)


def test_gak_float32_close_to_tslearn() -> None:
    xs, xp = _data([5, 3, 8])
    ours = align.cdist_gak([torch.tensor(s, dtype=torch.float32) for s in xs], sigma=2.0)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), tslearn_metrics.cdist_gak(xp, sigma=2.0), rtol=2e-5)


def test_soft_dtw_and_cdist_soft_dtw() -> None:
    xs, xp = _data([4, 1, 7, 3])
    ys, yp = _data([2, 5, 6], seed=1)
    for gamma in (0.01, 0.1, 1.0):
        for a in xs[:2]:
            for b in ys:
                ours = float(align.soft_dtw(torch.tensor(a), torch.tensor(b), gamma=gamma))
                want = float(tslearn_metrics.soft_dtw(a, b, gamma=gamma))
                assert ours == pytest.approx(want, rel=1e-10, abs=1e-10)
        ours_m = align.cdist_soft_dtw(_t(xs), _t(ys), gamma=gamma).numpy()
        want_m = tslearn_metrics.cdist_soft_dtw(xp, yp, gamma=gamma)
        np.testing.assert_allclose(ours_m, want_m, rtol=1e-10, atol=1e-10)


def test_dtw_path_and_value() -> None:
    xs, _ = _data([6, 4, 1, 5], dim=2, seed=3)
    for a in xs:
        for b in xs:
            want_path, want_dist = tslearn_metrics.dtw_path(a, b)
            value, path = align.dtw(torch.tensor(a), torch.tensor(b), return_path=True)
            assert path == [tuple(p) for p in want_path]
            # tslearn's dtw is the square root of the summed squared Euclidean cost
            assert float(value) == pytest.approx(want_dist**2, rel=1e-10, abs=1e-12)


def test_sigma_gak_same_seed_same_value() -> None:
    xs, xp = _data([5, 2, 9, 4], seed=5)
    for n_samples in (10, 100):
        ours = align.sigma_gak(_t(xs), n_samples=n_samples, random_state=3)
        want = float(tslearn_metrics.sigma_gak(xp, n_samples=n_samples, random_state=3))
        assert ours == pytest.approx(want, rel=1e-12)
