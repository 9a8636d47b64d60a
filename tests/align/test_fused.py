"""The fused GAK local kernel of the compiled DP, the symmetric all-pairs split and the buffer
pool, against naive references and the unfused paths."""

from __future__ import annotations

import gc
from dataclasses import replace as dataclasses_replace

import pytest
import torch
from torch.autograd import gradcheck

from sugar import align
from sugar.align import _buffers
from sugar.align._dp import _compiled_kernels, log_gak_alignment
from sugar.align._symmetric import symmetric_all_pairs
from sugar.align.kernels import SliceEmbeddings
from tests.align import naive

needs_numba = pytest.mark.skipif(_compiled_kernels() is None, reason="numba not installed")


def _distances(p: int, n: int, m: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    phi = 4 * torch.rand(p, n, m, generator=g, dtype=torch.float64)
    phi[0, 0, 0] = 0.0  # t = 0: log k = 0, the slope's largest value
    lx = torch.randint(1, n + 1, (p,), generator=g)
    ly = torch.randint(1, m + 1, (p,), generator=g)
    return phi.to(dtype), lx, ly


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("per_pair_sigma", [False, True])
def test_fused_gak_matches_naive_values_and_gradients(
    dtype: torch.dtype, table: bool, per_pair_sigma: bool
) -> None:
    phi, lx, ly = _distances(5, 4, 6, dtype)
    sigmas = torch.tensor([0.7, 1.3, 0.9, 2.0, 1.1], dtype=torch.float64)
    sigma = sigmas if per_pair_sigma else 0.8
    leaf = phi.clone().requires_grad_(True)
    ours = log_gak_alignment(leaf, sigma, lx, ly, table=table, backend="compiled")
    assert ours.dtype == dtype
    weights = torch.randn(ours.shape, dtype=dtype)
    if table:  # cells beyond the lengths carry no meaning: no gradient from them
        inside = (torch.arange(4)[:, None] < lx[:, None, None]) & (
            torch.arange(6) < ly[:, None, None]
        )
        weights = weights * inside
    (grad,) = torch.autograd.grad((ours * weights).sum(), [leaf])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for p in range(5):
        n, m = int(lx[p]), int(ly[p])
        s = float(sigmas[p]) if per_pair_sigma else 0.8
        ref_leaf = phi[p, :n, :m].double().clone().requires_grad_(True)
        ref = naive.log_gak_table([[ref_leaf[i, j] for j in range(m)] for i in range(n)], s)
        w = weights[p, :n, :m] if table else weights[p]
        got = ours[p, :n, :m] if table else ours[p]
        torch.testing.assert_close(got.double(), ref if table else ref[-1, -1], **tol)
        (ref_grad,) = torch.autograd.grad(
            (ref * w.double()).sum() if table else ref[-1, -1] * w.double(), [ref_leaf]
        )
        torch.testing.assert_close(grad[p, :n, :m].double(), ref_grad, **tol)
        assert (grad[p, n:] == 0).all() and (grad[p, :, m:] == 0).all()  # exactly zero


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_gak_equals_the_torch_path_across_lane_blocks(dtype: torch.dtype) -> None:
    phi, lx, ly = _distances(150, 7, 5, dtype, seed=1)  # three blocks of lanes, one partial
    for table in (False, True):
        outs, grads = [], []
        for backend in ("compiled", "torch"):
            leaf = phi.clone().requires_grad_(True)
            out = log_gak_alignment(leaf, 1.4, lx, ly, table=table, backend=backend)  # type: ignore[arg-type]
            out.sum().backward()
            outs.append(out.detach())
            grads.append(leaf.grad)
        if table:
            inside = (torch.arange(7)[None, :, None] < lx[:, None, None]) & (
                torch.arange(5)[None, None, :] < ly[:, None, None]
            )
            outs = [o * inside for o in outs]
        tol = dict(rtol=1e-11, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(outs[0], outs[1], **tol)
        torch.testing.assert_close(grads[0], grads[1], **tol)


@needs_numba
def test_gradcheck_fused_gak() -> None:
    g = torch.Generator().manual_seed(2)
    phi = (3 * torch.rand(3, 3, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    lengths = (torch.tensor([3, 1, 2]), torch.tensor([2, 4, 4]))
    sigmas = torch.tensor([0.6, 1.0, 1.7], dtype=torch.float64)
    for table in (False, True):
        for sigma in (0.9, sigmas):
            assert gradcheck(
                lambda t, tb=table, s=sigma: log_gak_alignment(
                    t, s, *lengths, table=tb, backend="compiled"
                ),
                (phi,),
            )


def test_symmetric_split_equals_the_full_computation() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, 2, generator=g, dtype=torch.float64)
    lengths = torch.tensor([3, 1, 2, 3, 3, 2, 1])
    calls: list[tuple[int, int]] = []

    def pairs(a, la, b, lb):  # type: ignore[no-untyped-def]
        calls.append((len(la), len(lb)))
        return align.cdist_soft_dtw(a, b, gamma=0.3, lengths_x=la, lengths_y=lb)

    leaf = x.clone().requires_grad_(True)
    split = symmetric_all_pairs(pairs, leaf, lengths, min_cells=2)
    assert (7, 7) not in calls and sum(a * b for a, b in calls) < 49  # fewer pairs than 7 x 7
    full_leaf = x.clone().requires_grad_(True)
    full = pairs(full_leaf, lengths, full_leaf, lengths)
    weights = torch.randn(7, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(split, full, rtol=1e-12, atol=1e-12)
    (split * weights).sum().backward()
    (full * weights).sum().backward()
    torch.testing.assert_close(leaf.grad, full_leaf.grad, rtol=1e-10, atol=1e-12)


def _soft_dtw(x: torch.Tensor, lengths: torch.Tensor, two: bool) -> torch.Tensor:
    y = x if two else None
    return align.cdist_soft_dtw(
        x, y, gamma=0.5, lengths_x=lengths, lengths_y=lengths if two else None
    )


def _log_gak(x: torch.Tensor, lengths: torch.Tensor, two: bool) -> torch.Tensor:
    y = x if two else None
    return align.cdist_log_gak(
        x, y, sigma=1.5, lengths_x=lengths, lengths_y=lengths if two else None
    )


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_cdist_of_one_set_equals_cdist_of_two(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "compiled" and _compiled_kernels() is None:
        pytest.skip("numba not installed")
    monkeypatch.setenv("SUGAR_ALIGN_BACKEND", backend)
    g = torch.Generator().manual_seed(6)
    b, s = 48, 16  # b * b * s * s >= MIN_CELLS: the one-set call splits
    x = torch.randn(b, s, 3, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    for fn in (_soft_dtw, _log_gak):
        one, two = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        torch.testing.assert_close(fn(one, lengths, False), fn(two, lengths, True),
                                   rtol=1e-12, atol=1e-12)  # fmt: skip
        fn(one, lengths, False).sum().backward()
        fn(two, lengths, True).sum().backward()
        torch.testing.assert_close(one.grad, two.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        align.cdist_gak(x, sigma=1.5, lengths_x=lengths),
        align.cdist_gak(x, x, sigma=1.5, lengths_x=lengths, lengths_y=lengths),
        rtol=1e-12,
        atol=1e-12,
    )


def test_cdist_of_slice_embeddings_splits_like_tensors() -> None:
    g = torch.Generator().manual_seed(7)
    b, s = 48, 16  # splits

    def unit(d: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(b, s, d, generator=g), dim=-1)

    emb = SliceEmbeddings(unit(5), unit(4), unit(3), torch.rand(b, s, generator=g) < 0.5,
                          torch.randint(1, s + 1, (b,), generator=g))  # fmt: skip
    torch.testing.assert_close(
        align.cdist_log_gak(emb, sigma=0.8), align.cdist_log_gak(emb, emb, sigma=0.8)
    )


def test_buffer_pool_reuses_only_dropped_buffers() -> None:
    shape = (_buffers.MIN_POOLED_BYTES // 4 + 5,)
    first = _buffers.empty(shape, torch.float32)
    address = first.data_ptr()
    view = first[3:]
    del first
    gc.collect()
    second = _buffers.empty(shape, torch.float32)  # the view keeps the first buffer in use
    assert second.data_ptr() != address
    reusable = {address, second.data_ptr()}
    del view, second
    gc.collect()
    third = _buffers.empty(shape, torch.float32)
    assert third.data_ptr() in reusable  # one of the two dropped buffers, handed out again
    small = _buffers.empty((3, 4), torch.float64)  # below the pooling size: plain torch.empty
    assert small.shape == (3, 4) and small.dtype == torch.float64


def _slice_embeddings(b: int, s: int, dtype: torch.dtype, g: torch.Generator) -> SliceEmbeddings:
    def unit(d: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(b, s, d, generator=g, dtype=dtype), dim=-1)

    lengths = torch.randint(1, s + 1, (b,), generator=g)
    return SliceEmbeddings(unit(7), unit(5), unit(3), torch.rand(b, s, generator=g) < 0.5, lengths)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_triple_kernel_cost_equals_the_reference(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sugar.align._fused_cost import fused_triple_kernel_cost
    from sugar.align.kernels import TypeMedians, triple_kernel_cost

    g = torch.Generator().manual_seed(8)
    x, y = _slice_embeddings(5, 4, dtype, g), _slice_embeddings(3, 6, dtype, g)
    x.is_text[0] = True  # a sequence of texts only, and one of images only
    x.is_text[1] = False
    medians = TypeMedians(image=0.7, text=1.3, cross=0.9)
    fused = fused_triple_kernel_cost(x, y, medians)
    assert fused is not None and fused.dtype == dtype
    assert fused.permute(2, 3, 0, 1).is_contiguous()  # the layout the DP reads without a copy
    monkeypatch.setenv("SUGAR_ALIGN_BACKEND", "torch")
    assert fused_triple_kernel_cost(x, y, medians) is None
    reference = triple_kernel_cost(x, y, medians=medians)
    inside = (torch.arange(4) < x.lengths[:, None])[:, None, :, None] & (
        torch.arange(6) < y.lengths[:, None]
    )[None, :, None, :]
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(fused[inside.expand_as(fused)], reference[inside.expand_as(fused)],
                               **tol)  # fmt: skip
    assert torch.isfinite(fused).all() and (fused >= 0).all()


@needs_numba
def test_triple_kernel_cost_with_a_gradient_keeps_the_reference_path() -> None:
    from sugar.align._fused_cost import fused_triple_kernel_cost
    from sugar.align.kernels import TypeMedians

    g = torch.Generator().manual_seed(9)
    x = _slice_embeddings(3, 4, torch.float64, g)
    leaf = dataclasses_replace(x, cross=x.cross.clone().requires_grad_(True))
    assert fused_triple_kernel_cost(leaf, leaf, TypeMedians()) is None
    align.cdist_log_gak(leaf, sigma=1.0).sum().backward()
    assert leaf.cross.grad is not None and torch.isfinite(leaf.cross.grad).all()
