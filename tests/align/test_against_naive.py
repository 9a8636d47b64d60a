"""sugar.align against the naive per-pair DP of naive.py: values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from sugar import align
from sugar.align._dp import log_alignment_table
from tests.align import naive

LENGTHS = [3, 1, 5, 4]


def _sequences(lengths: list[int] = LENGTHS, dim: int = 3, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True) for n in lengths
    ]


def _grads(outputs: Tensor, weights: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    return list(torch.autograd.grad((outputs * weights).sum(), inputs))


def test_dp_table_matches_naive_values_and_gradients() -> None:
    logk = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    ours = log_alignment_table(logk)
    weights = torch.randn_like(ours)
    (grad,) = _grads(ours, weights, [logk])
    for p in range(3):
        leaf = logk[p].detach().clone().requires_grad_(True)
        ref = _table_from_logk(leaf)
        assert torch.allclose(ours[p], ref, atol=1e-12)
        (ref_grad,) = torch.autograd.grad((ref * weights[p]).sum(), [leaf])
        assert torch.allclose(grad[p], ref_grad, atol=1e-12)


def _table_from_logk(logk: Tensor) -> Tensor:
    n, m = logk.shape
    cells: dict[tuple[int, int], Tensor] = {}
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                cells[i, j] = torch.tensor(0.0 if i == j == 0 else -math.inf, dtype=logk.dtype)
            else:
                prev = torch.stack([cells[i - 1, j], cells[i, j - 1], cells[i - 1, j - 1]])
                cells[i, j] = logk[i - 1, j - 1] + torch.logsumexp(prev, 0)
    return torch.stack(
        [torch.stack([cells[i, j] for j in range(1, m + 1)]) for i in range(1, n + 1)]
    )


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_cdist_log_gak_matches_naive(metric: str) -> None:
    xs = _sequences()
    ours = align.cdist_log_gak(xs, sigma=1.3, metric=metric)  # type: ignore[arg-type]
    weights = torch.randn_like(ours)
    grads = _grads(ours, weights, xs)
    ref = torch.stack([torch.stack([naive.log_gak(a, b, 1.3, metric) for b in xs]) for a in xs])
    assert torch.allclose(ours, ref, atol=1e-10)
    for g, r in zip(grads, _grads(ref, weights, xs), strict=True):
        assert torch.allclose(g, r, atol=1e-9)


@pytest.mark.parametrize("normalisation", ["cosine", "length", "none"])
@pytest.mark.parametrize("sigma_mode", ["fixed", "pair_length"])
def test_cdist_gak_every_mode_matches_naive(normalisation: str, sigma_mode: str) -> None:
    xs, ys = _sequences(), _sequences([2, 6, 1], seed=1)
    ours = align.cdist_gak(xs, ys, sigma=0.9, normalisation=normalisation, sigma_mode=sigma_mode)  # type: ignore[arg-type]
    weights = torch.randn_like(ours)
    grads = _grads(ours, weights, xs + ys)

    def sig(n: int, m: int) -> float:
        return 0.9 * math.sqrt((n + m) / 2) if sigma_mode == "pair_length" else 0.9

    self_x = [naive.log_gak(a, a, sig(len(a), len(a))) for a in xs]
    self_y = [naive.log_gak(b, b, sig(len(b), len(b))) for b in ys]
    ref = torch.stack(
        [
            torch.stack(
                [
                    naive.normalise(
                        naive.log_gak(a, b, sig(len(a), len(b))),
                        sa,
                        sb,
                        len(a),
                        len(b),
                        normalisation,
                    )
                    for b, sb in zip(ys, self_y, strict=True)
                ]
            )
            for a, sa in zip(xs, self_x, strict=True)
        ]
    )
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, _grads(ref, weights, xs + ys), strict=True):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-10)


def test_length_pair_standardised_matches_naive_grouping() -> None:
    xs = _sequences([2, 3, 2, 3, 1, 2])
    ours = align.cdist_gak(xs, sigma=1.1, normalisation="length_pair_standardised")
    cosine = align.cdist_gak(xs, sigma=1.1, normalisation="cosine").log()
    values = cosine.flatten().tolist()
    lengths = [(len(a), len(b)) for a in xs for b in xs]
    ref = naive.standardise_by_length_pair(values, lengths)
    assert torch.allclose(ours.flatten(), torch.tensor(ref, dtype=ours.dtype), atol=1e-9)
    assert ((ours > 0) & (ours < 1)).all()


@pytest.mark.parametrize("slope", [0.25, 0.5, 3.0])
def test_length_pair_standardised_slope_matches_naive(slope: float) -> None:
    xs = _sequences([2, 3, 2, 3, 1, 2])
    ours = align.cdist_gak(xs, sigma=1.1, normalisation="length_pair_standardised", slope=slope)
    cosine = align.cdist_gak(xs, sigma=1.1, normalisation="cosine").log()
    lengths = [(len(a), len(b)) for a in xs for b in xs]
    ref = naive.standardise_by_length_pair(cosine.flatten().tolist(), lengths, slope)
    assert torch.allclose(ours.flatten(), torch.tensor(ref, dtype=ours.dtype), atol=1e-9)
    # the prefix forms agree with the whole-sequence one on their own sets
    prefixes = align.cdist_gak_prefixes(xs, sigma=1.1, normalisation="length_pair_standardised",
                                        slope=slope)  # fmt: skip
    gram = align.gak_prefix_gram(xs, sigma=1.1, normalisation="length_pair_standardised",
                                 slope=slope)  # fmt: skip
    one = align.gak_prefix_gram(xs, sigma=1.1, normalisation="length_pair_standardised")
    assert torch.allclose(gram, torch.sigmoid(slope * torch.logit(one)), atol=1e-9)
    offsets = align.prefix_offsets(torch.tensor([len(x) for x in xs]))
    for a, x in enumerate(xs):
        for b, y in enumerate(xs):
            block = gram[offsets[a] : offsets[a] + len(x), offsets[b] : offsets[b] + len(y)]
            assert torch.allclose(prefixes[a, b, : len(x), : len(y)], block, atol=1e-9)


@pytest.mark.parametrize("normalisation", ["cosine", "length", "none"])
def test_a_slope_other_than_one_needs_the_logistic(normalisation: str) -> None:
    xs = _sequences([2, 3])
    with pytest.raises(ValueError, match=r"slope=0\.5 is the logistic's"):
        align.cdist_gak(xs, sigma=1.0, normalisation=normalisation, slope=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"slope must be a finite number > 0, got 0\.0"):
        align.cdist_gak(xs, sigma=1.0, normalisation="length_pair_standardised", slope=0.0)


def test_paired_log_gak_and_gak_match_naive() -> None:
    xs, ys = _sequences([3, 2]), _sequences([4, 1], seed=2)
    x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    y = torch.nn.utils.rnn.pad_sequence(ys, batch_first=True)
    ours = align.log_gak(x, y, sigma=2.0, lengths_x=[3, 2], lengths_y=[4, 1])
    ref = torch.stack([naive.log_gak(a, b, 2.0) for a, b in zip(xs, ys, strict=True)])
    assert torch.allclose(ours, ref, atol=1e-12)
    single = align.gak(xs[0], ys[0], sigma=2.0)
    lxx, lyy = naive.log_gak(xs[0], xs[0], 2.0), naive.log_gak(ys[0], ys[0], 2.0)
    assert torch.allclose(single, naive.normalise(ref[0], lxx, lyy, 3, 4, "cosine"))


def test_prefix_values_equal_separate_calls_on_prefixes() -> None:
    xs, ys = _sequences([4, 2]), _sequences([3, 5], seed=3)
    logs = align.cdist_log_gak_prefixes(xs, ys, sigma=1.2)
    cos = align.cdist_gak_prefixes(xs, ys, sigma=1.2, normalisation="cosine")
    length = align.cdist_gak_prefixes(xs, ys, sigma=1.2, normalisation="length")
    assert logs.shape == (2, 2, 4, 5)
    for a, x in enumerate(xs):
        for b, y in enumerate(ys):
            for i in range(4):
                for j in range(5):
                    if i >= len(x) or j >= len(y):
                        assert torch.isnan(logs[a, b, i, j]) and torch.isnan(cos[a, b, i, j])
                        continue
                    xp, yp = x[: i + 1], y[: j + 1]
                    assert torch.allclose(logs[a, b, i, j], align.log_gak(xp, yp, 1.2), atol=1e-12)
                    assert torch.allclose(cos[a, b, i, j], align.gak(xp, yp, 1.2), atol=1e-12)
                    want = align.gak(xp, yp, 1.2, normalisation="length")
                    assert torch.allclose(length[a, b, i, j], want, atol=1e-12)


def test_prefix_gradients_match_naive_tables() -> None:
    xs, ys = _sequences([3, 2]), _sequences([2, 3], seed=4)
    ours = align.cdist_log_gak_prefixes(xs, ys, sigma=1.0)
    weights = torch.randn_like(ours)
    valid = ~torch.isnan(ours)
    (ours_g,) = [torch.autograd.grad(ours[valid].mul(weights[valid]).sum(), xs[0])[0]]
    ref = sum(
        (naive.log_gak_table(naive.cost_matrix(xs[0], y), 1.0) * weights[0, b, :3, : len(y)]).sum()
        for b, y in enumerate(ys)
    )
    (ref_g,) = torch.autograd.grad(ref, xs[0])
    assert torch.allclose(ours_g, ref_g, atol=1e-10)


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_soft_dtw_family_matches_naive(gamma: float) -> None:
    xs = _sequences()
    ours = align.cdist_soft_dtw(xs, gamma=gamma)
    weights = torch.randn_like(ours)
    grads = _grads(ours, weights, xs)
    ref = torch.stack(
        [torch.stack([naive.soft_dtw(naive.cost_matrix(a, b), gamma) for b in xs]) for a in xs]
    )
    assert torch.allclose(ours, ref, atol=1e-10)
    for g, r in zip(grads, _grads(ref, weights, xs), strict=True):
        assert torch.allclose(g, r, atol=1e-9)
    div = align.soft_dtw_divergence(xs[0], xs[2], gamma=gamma)
    assert torch.allclose(div, ref[0, 2] - (ref[0, 0] + ref[2, 2]) / 2, atol=1e-10)
    cost = torch.rand(4, 3, dtype=torch.float64)
    from_cost = align.soft_dtw_from_cost(cost, gamma=gamma)
    assert torch.allclose(from_cost, naive.soft_dtw([list(r) for r in cost], gamma), atol=1e-12)


def test_dtw_value_path_and_subgradient_match_naive() -> None:
    xs = _sequences([5, 3, 4])
    for a in xs:
        for b in xs:
            cost = naive.cost_matrix(a, b)
            ref_value, ref_path = naive.dtw([[float(c.detach()) for c in row] for row in cost])
            value, path = align.dtw(a, b, return_path=True)
            assert math.isclose(float(value.detach()), ref_value, rel_tol=1e-12, abs_tol=1e-12)
            assert path == ref_path
            # gradient = sum of the cost gradients along the path
            (g,) = torch.autograd.grad(value, a)
            (r,) = torch.autograd.grad(sum(cost[i][j] for i, j in ref_path), a)
            assert torch.allclose(g, r, atol=1e-12)
    matrix = align.cdist_dtw(xs)
    for a, x in enumerate(xs):
        for b, y in enumerate(xs):
            assert torch.allclose(matrix[a, b], align.dtw(x, y), atol=1e-12)


def test_w_o_gak_prefix_mean_kernel_matches_naive() -> None:
    phi = torch.rand(2, 3, 4, dtype=torch.float64) * 3
    out = align.prefix_mean_local_kernel(phi, 0.8, torch.tensor([3, 2]), torch.tensor([4, 1]))
    k = torch.exp(-phi / (2 * 0.64)) / (2 - torch.exp(-phi / (2 * 0.64)))
    assert torch.allclose(out[0, 1, 2], k[0, :2, :3].mean())
    assert torch.allclose(out[1, 1, 0], k[1, :2, :1].mean())
    assert torch.isnan(out[1, 2, 0]) and torch.isnan(out[1, 0, 1])
