"""The compiled CPU kernels (sugar.align._compiled) against the naive DP and the torch path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.autograd import gradcheck

from sugar import align
from sugar.align._dp import _compiled_kernels, log_alignment
from tests.align.test_against_naive import _table_from_logk

pytestmark = pytest.mark.skipif(_compiled_kernels() is None, reason="numba not installed")

BACKENDS = ["compiled", "torch"]


def _problem(
    p: int, n: int, m: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logk = -3 * torch.rand(p, n, m, generator=g, dtype=torch.float64)
    lx = torch.randint(1, n + 1, (p,), generator=g)
    ly = torch.randint(1, m + 1, (p,), generator=g)
    return logk.to(dtype), lx, ly


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("table", [False, True])
def test_compiled_matches_naive_values_and_gradients(dtype: torch.dtype, table: bool) -> None:
    logk, lx, ly = _problem(5, 4, 6, dtype)
    leaf = logk.clone().requires_grad_(True)
    ours = log_alignment(leaf, lx, ly, table=table, backend="compiled")
    assert ours.dtype == dtype
    weights = torch.randn(ours.shape, dtype=dtype)
    if table:  # cells beyond the lengths carry no meaning: no gradient from them
        inside = (torch.arange(4)[:, None] < lx[:, None, None]) & (
            torch.arange(6) < ly[:, None, None]
        )
        weights = weights * inside
    (grad,) = torch.autograd.grad((ours * weights).sum(), [leaf])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for p in range(5):
        n, m = int(lx[p]), int(ly[p])
        ref_leaf = logk[p, :n, :m].double().clone().requires_grad_(True)
        ref = _table_from_logk(ref_leaf)
        w = weights[p, :n, :m] if table else weights[p]
        got = ours[p, :n, :m] if table else ours[p]
        torch.testing.assert_close(got.double(), ref if table else ref[-1, -1], **tol)
        (ref_grad,) = torch.autograd.grad(
            (ref * w.double()).sum() if table else ref[-1, -1] * w.double(), [ref_leaf]
        )
        torch.testing.assert_close(grad[p, :n, :m].double(), ref_grad, **tol)
        # padding gets exactly zero gradient
        assert (grad[p, n:] == 0).all() and (grad[p, :, m:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_equals_torch_across_lane_blocks(dtype: torch.dtype) -> None:
    # 150 pairs: three blocks of lanes, the last one partial; lengths vary within each block
    logk, lx, ly = _problem(150, 7, 5, dtype, seed=1)
    for table in (False, True):
        outs, grads = [], []
        for backend in BACKENDS:
            leaf = logk.clone().requires_grad_(True)
            out = log_alignment(leaf, lx, ly, table=table, scale=-2.5, backend=backend)  # type: ignore[arg-type]
            out.sum().backward()
            outs.append(out)
            grads.append(leaf.grad)
        tol = dict(rtol=1e-11, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
        if table:  # cells beyond the lengths carry no meaning: compare inside only
            i = torch.arange(7)[None, :, None] < lx[:, None, None]
            j = torch.arange(5)[None, None, :] < ly[:, None, None]
            outs = [o.detach() * (i & j) for o in outs]
        torch.testing.assert_close(outs[0], outs[1], **tol)
        torch.testing.assert_close(grads[0], grads[1], **tol)


def test_gradcheck_compiled_ends_and_table() -> None:
    logk = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    lengths = (torch.tensor([3, 1, 2]), torch.tensor([2, 4, 4]))
    for table in (False, True):
        assert gradcheck(
            lambda t, tb=table: log_alignment(t, table=tb, backend="compiled"), (logk,)
        )
        assert gradcheck(
            lambda t, tb=table: log_alignment(
                t, *lengths, table=tb, scale=-1.7, backend="compiled"
            ),
            (logk,),
        )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SUGAR_ALIGN_BACKEND", request.param)
    yield request.param


def test_public_functions_agree_with_padding_and_zero_padding_gradient(backend: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4, 1])
    x[1, 2:] = 1e3  # garbage beyond the lengths
    for fn in (
        lambda t: align.cdist_soft_dtw(t, gamma=0.2, lengths_x=lengths),
        lambda t: align.cdist_log_gak(t, sigma=1.0, lengths_x=lengths),
        lambda t: align.cdist_gak_prefixes(t, sigma=1.0, lengths_x=lengths).nan_to_num(),
    ):
        leaf = x.clone().requires_grad_(True)
        fn(leaf).sum().backward()
        assert leaf.grad is not None
        assert (leaf.grad[1, 2:] == 0).all() and (leaf.grad[2, 4:] == 0).all()
        assert (leaf.grad[3, 1:] == 0).all() and (leaf.grad[0] != 0).any()


def test_non_finite_cost_is_reported_by_the_compiled_path(backend: str) -> None:
    cost = torch.rand(2, 3, 4, dtype=torch.float64)
    cost[1, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="cost"):
        align.soft_dtw_from_cost(cost, gamma=0.5)


def test_backend_switch_errors() -> None:
    logk = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="backend"):
        log_alignment(logk, backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="float16"):
        log_alignment(logk.half(), backend="compiled")
    assert log_alignment(logk.half()).dtype == torch.float16  # auto falls back to torch


@pytest.mark.slow
def test_parallel_kernels_equal_serial() -> None:
    logk, lx, ly = _problem(200, 6, 6, torch.float64, seed=4)
    threads = torch.get_num_threads()
    results = []
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        try:
            leaf = logk.clone().requires_grad_(True)
            out = log_alignment(leaf, lx, ly, backend="compiled")
            out.sum().backward()
            results.append((out.detach(), leaf.grad))
        finally:
            torch.set_num_threads(threads)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
