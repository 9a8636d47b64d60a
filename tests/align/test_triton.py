"""The Triton kernels (sugar.align._triton) against the naive DP and the torch path.

Without a GPU they run in triton's interpreter on CPU tensors: TRITON_INTERPRET=1 must be set
before triton decorates them, so this module sets it (when no CUDA device is present) before it
imports them. The interpreter runs one program after another in numpy: sizes stay tiny. With a
GPU the same tests run the compiled kernels on CUDA tensors. Skipped where triton is absent
(``pip install sugar[gpu]``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck

from sugar import align
from sugar.align import _backends
from sugar.align._dp import log_alignment, log_gak_alignment
from sugar.align.kernels import local_log_kernel
from tests.align.naive import log_gak_table
from tests.align.test_against_naive import _table_from_logk

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
from sugar.align import _triton  # after TRITON_INTERPRET

DEVICE = "cpu" if _triton.INTERPRETED else "cuda"
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="triton was imported without TRITON_INTERPRET=1 and there is no GPU",
)


def _problem(
    p: int, n: int, m: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    values = 3 * torch.rand(p, n, m, generator=g, dtype=torch.float64)
    lx = torch.randint(1, n + 1, (p,), generator=g)
    ly = torch.randint(1, m + 1, (p,), generator=g)
    lx[0], ly[0] = n, m  # one pair fills the grid
    return values.to(dtype), lx, ly


def _inside(lx: torch.Tensor, ly: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """(P, N, M) True on the cells within each pair's lengths."""
    return (torch.arange(n)[:, None] < lx[:, None, None]) & (torch.arange(m) < ly[:, None, None])


# N < M and N > M in both dtypes; N = 16 fills the 16 lanes (row N on the last lane); N = 1
CASES = [
    (shape, dtype) for shape in [(4, 4, 6), (3, 8, 3)] for dtype in [torch.float64, torch.float32]
] + [((2, 16, 2), torch.float64), ((3, 1, 5), torch.float64)]


@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("kind", ["soft_dtw", "gak"])
@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_triton_matches_naive_values_and_gradients(
    dtype: torch.dtype, table: bool, kind: str, shape: tuple[int, int, int]
) -> None:
    p, n, m = shape
    values, lx, ly = _problem(p, n, m, dtype)
    sigma = torch.linspace(0.7, 1.9, p, dtype=torch.float64)
    leaf = values.to(DEVICE).requires_grad_(True)
    if kind == "soft_dtw":  # the DP reads scale * cost with scale = -1 / gamma
        ours = log_alignment(leaf, lx, ly, table=table, scale=-1 / 0.3, backend="triton")
    else:
        ours = log_gak_alignment(leaf, sigma.to(dtype), lx, ly, table=table, backend="triton")
    assert ours.dtype == dtype and ours.device.type == DEVICE
    weights = torch.randn(ours.shape, dtype=dtype)
    if table:  # cells beyond the lengths carry no meaning: no gradient from them
        weights = weights * _inside(lx, ly, n, m)
    (grad,) = torch.autograd.grad((ours * weights.to(DEVICE)).sum(), [leaf])
    ours, grad = ours.detach().cpu(), grad.cpu()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for q in range(p):
        a, b = int(lx[q]), int(ly[q])
        ref_leaf = values[q, :a, :b].double().clone().requires_grad_(True)
        if kind == "soft_dtw":
            ref = _table_from_logk(-ref_leaf / 0.3)
        else:
            phi = [[ref_leaf[i, j] for j in range(b)] for i in range(a)]
            ref = log_gak_table(phi, float(sigma[q]))
        got = ours[q, :a, :b] if table else ours[q]
        torch.testing.assert_close(got.double(), ref if table else ref[-1, -1], **tol)
        w = weights[q, :a, :b].double() if table else weights[q].double()
        (ref_grad,) = torch.autograd.grad((ref * w).sum() if table else ref[-1, -1] * w, ref_leaf)
        torch.testing.assert_close(grad[q, :a, :b].double(), ref_grad, **tol)
        # padding gets exactly zero gradient
        assert (grad[q, a:] == 0).all() and (grad[q, :, b:] == 0).all()


def test_gradcheck_triton_ends_and_table() -> None:
    # fast_mode (a random direction's finite difference): the interpreter takes ~0.1 s a call,
    # and the full Jacobian took a minute; the naive-DP tests above check every gradient entry
    logk = torch.randn(3, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    phi = torch.rand(3, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    lengths = (torch.tensor([3, 1, 2]), torch.tensor([2, 4, 4]))
    for table in (False, True):
        assert gradcheck(
            lambda t, tb=table: log_alignment(t, *lengths, table=tb, scale=-1.7, backend="triton"),
            (logk,),
            fast_mode=True,
        )
        assert gradcheck(
            lambda t, tb=table: log_gak_alignment(t, 0.8, *lengths, table=tb, backend="triton"),
            (phi,),
            fast_mode=True,
        )


def test_public_functions_through_triton_equal_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    x[1, 2:] = 1e3  # garbage beyond the lengths
    results = {}
    for backend in ("triton", "torch"):
        monkeypatch.setenv("SUGAR_ALIGN_BACKEND", backend)
        outs = []
        for fn in (
            lambda t: align.cdist_soft_dtw(t, gamma=0.2, lengths_x=lengths),
            lambda t: align.cdist_log_gak(t, sigma=1.0, lengths_x=lengths),
            lambda t: align.cdist_gak_prefixes(t, sigma=1.0, lengths_x=lengths).nan_to_num(),
        ):
            leaf = x.clone().to(DEVICE).requires_grad_(True)
            out = fn(leaf)
            out.sum().backward()
            assert leaf.grad is not None
            assert (leaf.grad[1, 2:] == 0).all() and (leaf.grad[2, 4:] == 0).all()
            outs.append((out.detach().cpu(), leaf.grad.cpu()))
        results[backend] = outs
    pairs = zip(results["triton"], results["torch"], strict=True)
    for (value, grad), (ref_value, ref_grad) in pairs:
        torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)


def test_triton_without_gradient_equals_with_and_takes_tensor_scales() -> None:
    values, lx, ly = _problem(4, 3, 5, torch.float64, seed=2)
    values = values.to(DEVICE)
    sigma = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    plain = log_gak_alignment(values, sigma, lx, ly, backend="triton")
    leaf = values.clone().requires_grad_(True)
    tracked = log_gak_alignment(leaf, sigma, lx, ly, backend="triton")
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=0)
    logk = local_log_kernel(values.cpu(), sigma.reshape(-1, 1, 1))
    reference = log_alignment(logk, lx, ly, backend="torch")
    torch.testing.assert_close(plain.cpu(), reference, rtol=1e-12, atol=1e-12)


def test_triton_backend_errors_and_auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    half = torch.zeros(1, 2, 2, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match="float16"):
        log_alignment(half, backend="triton")
    # auto sends only CUDA tensors to triton (CPU ones to the compiled kernels or torch)
    assert not _backends.use_triton(torch.zeros(1, 2, 2), None)
    monkeypatch.setattr(_backends, "triton_kernels", lambda: None)
    with pytest.raises(ValueError, match="pip install sugar\\[gpu\\]"):
        log_alignment(torch.zeros(1, 2, 2), backend="triton")


@pytest.mark.slow
def test_kernels_compile_for_a_gpu_without_one() -> None:
    # the interpreter above does not type-check the kernels as the compiler does: compile each
    # variant for sm_90 (PTX, then the ptxas triton ships) in a process without the interpreter
    script = Path(__file__).with_name("triton_offline_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(script), "90"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(": ok") == 24
