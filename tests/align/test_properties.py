"""gradcheck, identities, the Triple Kernel, stability and bad input for sugar.align."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.autograd import gradcheck

from sugar import align
from sugar.align._dp import log_alignment_table
from sugar.align._inputs import as_batch
from sugar.align.kernels import SliceEmbeddings, TypeMedians


def _seqs(
    lengths: list[int], dim: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=g, dtype=dtype, requires_grad=True) for n in lengths]


def _slices(
    lengths: list[int], seed: int = 0, dtype: torch.dtype = torch.float64
) -> SliceEmbeddings:
    g = torch.Generator().manual_seed(seed)
    b, s = len(lengths), max(lengths)

    def unit(d: int) -> Tensor:
        return torch.nn.functional.normalize(torch.randn(b, s, d, generator=g, dtype=dtype), dim=-1)

    is_text = torch.rand(b, s, generator=g) < 0.5
    return SliceEmbeddings(unit(5), unit(3), unit(4), is_text, torch.tensor(lengths))


# ------------------------------------------------------------------------------ gradcheck


def test_gradcheck_local_log_kernel() -> None:
    phi = (torch.rand(3, 4, dtype=torch.float64) * 5).requires_grad_(True)
    assert gradcheck(lambda p: align.local_log_kernel(p, 0.7), (phi,))
    sigma = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    assert gradcheck(lambda p: align.local_log_kernel(p, sigma), (phi,))
    k = torch.exp(align.local_log_kernel(phi.detach(), 0.7))
    t = phi.detach() / (2 * 0.49)
    assert torch.allclose(k, torch.exp(-t) / (2 - torch.exp(-t)))


def test_gradcheck_dp() -> None:
    logk = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(log_alignment_table, (logk,))
    lengths = (torch.tensor([3, 1]), torch.tensor([2, 4]))
    assert gradcheck(lambda t: log_alignment_table(t, *lengths), (logk,))


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: align.soft_dtw(a, b, gamma=0.3),
        lambda a, b: align.soft_dtw_divergence(a, b, gamma=0.5),
        lambda a, b: align.cdist_soft_dtw([a, b], gamma=0.7),
        lambda a, b: align.log_gak(a, b, sigma=1.1),
        lambda a, b: align.gak(a, b, sigma=1.1, metric="cosine"),
        lambda a, b: align.cdist_gak([a, b], sigma=1.1, normalisation="length"),
        lambda a, b: align.cdist_gak([a, b], [b], sigma=1.1, sigma_mode="pair_length"),
        lambda a, b: align.cdist_gak(
            [a, b, a[:1], b[:2]], sigma=1.1, normalisation="length_pair_standardised"
        ),
        lambda a, b: align.cdist_gak_prefixes([a, b], sigma=0.9).nan_to_num(),
        lambda a, b: align.dtw(a, b),
    ],
    ids=[
        "soft_dtw",
        "divergence",
        "cdist_soft_dtw",
        "log_gak",
        "gak_cosine_metric",
        "cdist_gak_length",
        "cdist_gak_pair_length",
        "cdist_gak_standardised",
        "gak_prefixes",
        "dtw",
    ],
)
def test_gradcheck_public_functions(fn) -> None:  # type: ignore[no-untyped-def]
    a, b = _seqs([3, 4])
    assert gradcheck(fn, (a, b))


def test_gradcheck_triple_kernel_targets() -> None:
    base = _slices([3, 2])
    image = base.image.clone().requires_grad_(True)
    cross = base.cross.clone().requires_grad_(True)

    def targets(img: Tensor, crs: Tensor) -> Tensor:
        x = SliceEmbeddings(img, base.text, crs, base.is_text, base.lengths)
        return align.cdist_gak_prefixes(
            x, sigma=0.8, medians=TypeMedians(0.7, 1.2, 0.9)
        ).nan_to_num()

    assert gradcheck(targets, (image, cross))


# ------------------------------------------------------------------------------ identities


def test_gak_self_is_one_symmetric_and_in_unit_interval() -> None:
    xs = _seqs([4, 1, 6, 3])
    k = align.cdist_gak(xs, sigma=1.0).detach()
    assert torch.allclose(k.diagonal(), torch.ones(4, dtype=k.dtype))
    assert torch.allclose(k, k.T)
    assert ((k > 0) & (k <= 1 + 1e-12)).all()
    for rule in ("length", "length_pair_standardised"):
        kk = align.cdist_gak(xs, sigma=1.0, normalisation=rule).detach()  # type: ignore[arg-type]
        assert torch.allclose(kk, kk.T)
    assert torch.allclose(
        align.cdist_gak(xs, sigma=1.0, normalisation="length").diagonal().detach(),
        torch.ones(4, dtype=k.dtype),
    )


def test_single_slice_pairs_reduce_to_the_local_kernel() -> None:
    x, y = _seqs([1, 1])
    phi = ((x - y) ** 2).sum()
    k = torch.exp(-phi / 2) / (2 - torch.exp(-phi / 2))
    for rule in ("cosine", "length"):
        assert torch.allclose(align.gak(x, y, sigma=1.0, normalisation=rule), k)  # type: ignore[arg-type]


def test_soft_dtw_tends_to_dtw_as_gamma_tends_to_zero() -> None:
    x, y = _seqs([5, 7])
    hard = float(align.dtw(x, y).detach())
    gaps = [
        abs(float(align.soft_dtw(x, y, gamma=g).detach()) - hard) for g in (1.0, 0.1, 0.01, 0.001)
    ]
    assert gaps[-1] < 1e-2 * (1 + hard)
    # soft-min is within gamma * log(3) per step of the min: the gap shrinks with gamma
    assert gaps == sorted(gaps, reverse=True)


def test_divergence_is_zero_on_the_diagonal_and_non_negative() -> None:
    xs = [s.detach() for s in _seqs([4, 2, 5, 3], seed=7)]
    for a in xs:
        assert abs(float(align.soft_dtw_divergence(a, a, gamma=0.5))) < 1e-12
        for b in xs:
            assert float(align.soft_dtw_divergence(a, b, gamma=0.5)) >= -1e-12


def test_pair_value_independent_of_other_sequences_in_batch() -> None:
    a, b, long = _seqs([3, 2, 9])
    small = align.cdist_gak([a, b], sigma=1.0)
    big = align.cdist_gak([a, b, long], sigma=1.0)
    assert torch.allclose(small, big[:2, :2], rtol=1e-12, atol=0)
    s_small = align.cdist_soft_dtw([a, b], gamma=0.1)
    s_big = align.cdist_soft_dtw([long, a, b], gamma=0.1)
    assert torch.allclose(s_small, s_big[1:, 1:], rtol=1e-12, atol=0)


def test_padding_changes_nothing_and_gets_exactly_zero_gradient() -> None:
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    garbage = x.clone()
    garbage[1, 2:] = 1e3
    garbage[2, 4:] = -7
    clean = x.clone()
    clean[1, 2:] = 0
    clean[2, 4:] = 0
    for fn in (
        lambda t: align.cdist_gak(t, sigma=1.0, lengths_x=lengths),
        lambda t: align.cdist_soft_dtw(t, gamma=0.2, lengths_x=lengths),
        lambda t: align.cdist_gak_prefixes(t, sigma=1.0, lengths_x=lengths).nan_to_num(),
        lambda t: align.cdist_dtw(t, lengths_x=lengths),
    ):
        g = garbage.clone().requires_grad_(True)
        out = fn(g)
        assert torch.allclose(out, fn(clean), rtol=1e-12, atol=1e-12)
        out.sum().backward()
        assert g.grad is not None
        assert (g.grad[1, 2:] == 0).all() and (g.grad[2, 4:] == 0).all()
        assert (g.grad[0] != 0).any()


def test_float32_inputs_give_float32_outputs_close_to_float64() -> None:
    xs = _seqs([4, 3, 5])
    k64 = align.cdist_gak(xs, sigma=1.5)
    k32 = align.cdist_gak([s.detach().float() for s in xs], sigma=1.5)
    assert k32.dtype == torch.float32
    assert torch.allclose(k32.double(), k64.detach(), rtol=1e-5)


# ------------------------------------------------------------------------------ Triple Kernel


def test_triple_kernel_uses_unimodal_for_same_and_cross_for_mixed_modality() -> None:
    x, y = _slices([3, 2], seed=1), _slices([2, 3], seed=2)
    phi = align.triple_kernel_cost(x, y)
    for a in range(2):
        for b in range(2):
            for i in range(int(x.lengths[a])):
                for j in range(int(y.lengths[b])):
                    tx, ty = bool(x.is_text[a, i]), bool(y.is_text[b, j])
                    kind = "text" if tx and ty else "image" if not (tx or ty) else "cross"
                    u, v = getattr(x, kind)[a, i], getattr(y, kind)[b, j]
                    assert torch.allclose(phi[a, b, i, j], ((u - v) ** 2).sum(), atol=1e-12), kind
    no_tk = align.triple_kernel_cost(x, y, triple_kernel=False)
    assert torch.allclose(no_tk, align.cdist_cost(x.cross, y.cross), atol=1e-12)
    med = TypeMedians(image=2.0, text=4.0, cross=0.5)
    scaled = align.triple_kernel_cost(x, y, medians=med)
    tx, ty = x.is_text[:, None, :, None], y.is_text[None, :, None, :]
    factor = torch.where(tx & ty, 4.0, torch.where(~tx & ~ty, 2.0, 0.5)).double()
    real = x.valid[:, None, :, None] & y.valid[None, :, None, :]  # padding is unspecified
    assert torch.allclose((scaled * factor)[real], phi[real], atol=1e-12)


def test_triple_kernel_paired_equals_the_diagonal_of_all_pairs() -> None:
    x = _slices([3, 2, 4], seed=3)
    full = align.triple_kernel_cost(x)
    paired = align.triple_kernel_cost(x, x, paired=True)
    real = x.valid[:, :, None] & x.valid[:, None, :]  # padding is unspecified
    assert torch.allclose(paired[real], full[torch.arange(3), torch.arange(3)][real], atol=1e-12)


def test_gak_on_slice_embeddings_equals_gak_on_the_triple_kernel_cost() -> None:
    x = _slices([3, 1, 2], seed=4)
    k = align.cdist_log_gak(x, sigma=0.7)
    phi = align.triple_kernel_cost(x)
    for a in range(3):
        for b in range(3):
            sub = phi[a, b, : x.lengths[a], : x.lengths[b]]
            assert torch.allclose(k[a, b], align.log_gak_from_cost(sub, sigma=0.7), atol=1e-12)


def test_medians_and_auto_delta() -> None:
    x = _slices([8] * 40, seed=5)
    med = align.triple_kernel_medians(x, n_pairs=2000, seed=0)
    # unit vectors in low dimension: squared distances lie in [0, 4]
    assert 0 < med.image < 4 and 0 < med.text < 4 and 0 < med.cross < 4
    delta = align.auto_delta(x, n_pairs=1000, seed=0)
    assert 0 < delta < 2
    assert delta == align.auto_delta(x, n_pairs=1000, seed=0)  # deterministic in its seed
    only_text = SliceEmbeddings(x.image, x.text, x.cross, torch.ones_like(x.is_text), x.lengths)
    assert align.triple_kernel_medians(only_text).image == 1.0  # no image pair: neutral
    with pytest.raises(ValueError, match="n_pairs must be >= 1000"):
        align.auto_delta(x, n_pairs=10)


# ------------------------------------------------------------------------------ stability


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_sequences_small_gamma_stay_finite(dtype: torch.dtype) -> None:
    a, b = _seqs([256, 250], dim=4, dtype=dtype)
    sdtw = align.soft_dtw(a, b, gamma=0.01)
    (g,) = torch.autograd.grad(sdtw, a)
    assert torch.isfinite(sdtw) and torch.isfinite(g).all()
    lg = align.log_gak(a, b, sigma=0.1)
    (g2,) = torch.autograd.grad(lg, a)
    assert torch.isfinite(lg) and torch.isfinite(g2).all()
    k = align.gak(a, b, sigma=1.0)
    assert torch.isfinite(k) and 0 <= float(k.detach()) <= 1


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (
            lambda: align.gak(torch.randn(3, 2), torch.randn(3, 4)),
            "x and y have different dimensions: 2 and 4",
        ),
        (
            lambda: align.cdist_gak([torch.randn(3, 2), torch.randn(3, 5)]),
            r"X: sequences have different dimensions",
        ),
        (
            lambda: align.cdist_gak([torch.randn(3, 2)], [torch.randn(2, 3)]),
            "X and Y have different dimensions",
        ),
        (lambda: align.soft_dtw(torch.randn(0, 2), torch.randn(3, 2)), "x is an empty sequence"),
        (
            lambda: align.cdist_soft_dtw([torch.randn(2, 2), torch.randn(0, 2)]),
            r"X\[1\] is an empty sequence",
        ),
        (
            lambda: align.cdist_gak(torch.randn(2, 3, 1), lengths_x=[3, 0]),
            "sequence 1 of X is empty",
        ),
        (
            lambda: align.cdist_gak(torch.randn(2, 3, 1), lengths_x=[3, 4]),
            "sequence 1 of X has length 4 > 3",
        ),
        (
            lambda: align.soft_dtw(torch.randn(3, 2), torch.randn(3, 2), gamma=-1.0),
            "gamma must be a finite number > 0",
        ),
        (
            lambda: align.gak(torch.randn(3, 2), torch.randn(3, 2), sigma=0.0),
            "sigma must be a finite number > 0",
        ),
        (
            lambda: align.gak(torch.randn(3, 2), torch.randn(3, 2), normalisation="l2"),
            "normalisation must be one of",
        ),  # type: ignore[arg-type]
        (
            lambda: align.gak(torch.randn(3, 2), torch.randn(3, 2), sigma_mode="auto"),
            "sigma_mode must be",
        ),  # type: ignore[arg-type]
        (lambda: align.gak(torch.randn(3, 2), torch.randn(3, 2), metric="l1"), "metric must be"),  # type: ignore[arg-type]
        (
            lambda: align.gak(torch.full((3, 2), float("nan")), torch.randn(3, 2)),
            "x contains NaN or inf",
        ),
        (
            lambda: align.gak(
                torch.randn(2), torch.randn(2), normalisation="length_pair_standardised"
            ),
            "standardises a set of pairs",
        ),
        (lambda: align.log_gak_from_cost(-torch.ones(2, 2)), "phi must hold finite distances >= 0"),
        (
            lambda: align.cdist_gak(_slices([2, 1]), metric="cosine"),
            "SliceEmbeddings take metric='triple_kernel'",
        ),
        (
            lambda: SliceEmbeddings(
                torch.zeros(2, 3, 4),
                torch.zeros(2, 3, 4),
                torch.zeros(2, 2, 4),
                torch.zeros(2, 3, dtype=torch.bool),
                torch.tensor([1, 3]),
            ),
            r"SliceEmbeddings.cross must have shape \(2, 3, D\)",
        ),
        (
            lambda: SliceEmbeddings(
                torch.zeros(1, 3, 4),
                torch.zeros(1, 3, 4),
                torch.zeros(1, 3, 4),
                torch.zeros(1, 3, dtype=torch.bool),
                torch.tensor([0]),
            ),
            r"SliceEmbeddings.lengths must be 1 integers in \[1, 3\]",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=pattern):
        call()


def test_all_pairs_costs_keep_the_pairs_innermost_in_memory() -> None:
    """The DP reads (Sx, Sy, Bx*By) memory without a copy; the cost functions must produce it."""
    x, y = torch.randn(4, 5, 3), torch.randn(6, 7, 3)
    for metric in ("sqeuclidean", "cosine"):
        cost = align.cdist_cost(x, y, metric)  # type: ignore[arg-type]
        assert cost.shape == (4, 6, 5, 7)
        assert cost.permute(2, 3, 0, 1).is_contiguous(), metric
    tk = align.triple_kernel_cost(_slices([3, 2, 4], seed=1, dtype=torch.float32))
    assert tk.permute(2, 3, 0, 1).is_contiguous()


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_cost_of_one_set_equals_the_cost_against_its_copy(metric: str) -> None:
    # cdist_cost(x, x) shares x's copies between both sides: same values and gradients
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    weights = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    results = []
    for same in (True, False):
        leaf = x.clone().requires_grad_(True)
        other = leaf if same else leaf.clone()
        cost = align.cdist_cost(leaf, other, metric)  # type: ignore[arg-type]
        (grad,) = torch.autograd.grad((cost * weights).sum(), [leaf])
        results.append((cost.detach(), grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-13, atol=1e-13)


def test_non_finite_input_is_found_when_the_sum_is_finite_or_overflows() -> None:
    big = torch.full((2, 3, 1), 3e38)  # finite values whose float32 sum overflows: accepted
    padded, lengths = as_batch("X", big)
    assert padded is big and lengths.tolist() == [3, 3]
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(2, 3, 1)
        x[1, 2, 0] = bad
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            align.cdist_soft_dtw(x, gamma=1.0)
    with pytest.raises(ValueError, match="X contains NaN or inf"):  # inf - inf: the sum is NaN
        align.cdist_log_gak(torch.tensor([[[float("inf")], [-float("inf")]]]), sigma=1.0)
