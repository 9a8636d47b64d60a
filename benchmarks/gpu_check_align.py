"""Device check: sugar.align's Triton kernels on a CUDA device, against the torch path there.

Run on a machine with a GPU and triton (``pip install -e .[gpu]``), one short command:

    python benchmarks/gpu_check_align.py                 # about a minute; JSON to --out
    python benchmarks/gpu_check_align.py --device cpu    # tries the script without a GPU:
                                                         # triton's interpreter, tiny sizes

It prints, and writes to ``--out`` as JSON:

1. parity: soft-DTW and log-GAK, ends and every prefix pair, float32 and float64, variable
   lengths, through ``log_alignment`` / ``log_gak_alignment`` with ``backend="triton"``
   against ``backend="torch"`` on the same device: the largest difference of the values and of
   the gradients (of a random weighting of the outputs), and whether padding got exactly zero
   gradient; then the public ``cdist_soft_dtw`` / ``cdist_log_gak`` / ``cdist_gak_prefixes``
   with ``SUGAR_ALIGN_BACKEND=auto`` (which must pick triton on CUDA) against ``torch``;
2. timings (ms, wall clock with a device synchronisation, median of ``--repeats`` after a
   warm-up; the first call's compile time separately): the precomputed-cost DP over all B x B
   pairs of B sequences of S steps, forward and forward+backward, and all-pairs log-GAK at
   D = 256 through ``cdist_log_gak``, triton against the torch path, B in {32, 128, 512},
   S in {8, 32}.

Nothing here is a test: CI has no GPU. The figures go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float]:
    """(first call, median of ``repeats`` later calls), in ms of wall time, synchronised."""
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * first, 1e3 * statistics.median(times)


def _inside(lx: Any, ly: Any, n: int, m: int) -> Any:
    import torch

    rows = torch.arange(n, device=lx.device)[:, None] < lx[:, None, None]
    return rows & (torch.arange(m, device=lx.device) < ly[:, None, None])


def parity(device: str, pairs: int, steps: int) -> list[dict]:
    import torch

    from sugar.align._dp import log_alignment, log_gak_alignment

    results = []
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        values = (3 * torch.rand(pairs, steps, steps + 3, generator=g)).to(dtype).to(device)
        lx = torch.randint(1, steps + 1, (pairs,), generator=g).to(device)
        ly = torch.randint(1, steps + 4, (pairs,), generator=g).to(device)
        sigma = (0.5 + torch.rand(pairs, generator=g)).to(dtype)
        for kind in ("soft_dtw", "gak"):
            for table in (False, True):
                outs = {}
                shape = (pairs, steps, steps + 3) if table else (pairs,)
                weights = torch.randn(shape, generator=g).to(dtype).to(device)
                if table:  # cells beyond the lengths carry no meaning
                    weights = weights * _inside(lx, ly, steps, steps + 3)
                for backend in ("triton", "torch"):
                    leaf = values.clone().requires_grad_(True)
                    if kind == "soft_dtw":
                        out = log_alignment(leaf, lx, ly, table=table, scale=-10.0,
                                            backend=backend)  # fmt: skip
                    else:
                        out = log_gak_alignment(leaf, sigma, lx, ly, table=table, backend=backend)
                    if table:
                        out = out * _inside(lx, ly, steps, steps + 3)
                    (grad,) = torch.autograd.grad((out * weights).sum(), [leaf])
                    outs[backend] = (out.detach(), grad)
                (a, ga), (b, gb) = outs["triton"], outs["torch"]
                padding = ~_inside(lx, ly, steps, steps + 3)
                results.append({
                    "dtype": str(dtype), "kind": kind, "table": table,
                    "value_max_abs_diff": float((a - b).abs().max()),
                    "grad_max_abs_diff": float((ga - gb).abs().max()),
                    "padding_grad_exactly_zero": bool((ga[padding] == 0).all()),
                })  # fmt: skip
                print(results[-1])
    return results


def public_parity(device: str) -> list[dict]:
    import torch

    from sugar import align
    from sugar.align import _backends

    x = torch.randn(12, 9, 16, dtype=torch.float64, device=device)
    lengths = torch.randint(1, 10, (12,)).to(device)
    probe = torch.zeros(1, 2, 2, device=device)
    picks_triton = _backends.use_triton(probe, None)
    results = []
    for name, fn in (
        ("cdist_soft_dtw", lambda t: align.cdist_soft_dtw(t, gamma=0.1, lengths_x=lengths)),
        ("cdist_log_gak", lambda t: align.cdist_log_gak(t, sigma=2.0, lengths_x=lengths)),
        ("cdist_gak_prefixes",
         lambda t: align.cdist_gak_prefixes(t, sigma=2.0, lengths_x=lengths).nan_to_num()),
    ):  # fmt: skip
        outs = []
        for backend in ("auto", "torch"):
            os.environ["SUGAR_ALIGN_BACKEND"] = backend
            leaf = x.clone().requires_grad_(True)
            out = fn(leaf)
            out.sum().backward()
            outs.append((out.detach(), leaf.grad))
        os.environ["SUGAR_ALIGN_BACKEND"] = "auto"
        (a, ga), (b, gb) = outs
        results.append({"function": name, "auto_picks_triton": picks_triton,
                        "value_max_abs_diff": float((a - b).abs().max()),
                        "grad_max_abs_diff": float((ga - gb).abs().max())})  # fmt: skip
        print(results[-1])
    return results


def timings(device: str, sizes: list[tuple[int, int]], repeats: int) -> list[dict]:
    import torch

    from sugar import align
    from sugar.align._dp import log_alignment

    results = []
    for b, s in sizes:
        cost = torch.rand(b * b, s, s, device=device)
        x = torch.nn.functional.normalize(torch.randn(b, s, 256, device=device), dim=-1)
        for backend in ("triton", "torch"):
            os.environ["SUGAR_ALIGN_BACKEND"] = backend

            def dp(grad: bool, cost: Any = cost) -> None:
                leaf = cost.clone().requires_grad_(grad)
                out = log_alignment(leaf, scale=-10.0)
                if grad:
                    out.sum().backward()

            def gak(grad: bool, x: Any = x) -> None:
                leaf = x.clone().requires_grad_(grad)
                out = align.cdist_log_gak(leaf, sigma=1.0)
                if grad:
                    out.sum().backward()

            row: dict[str, Any] = {"B": b, "S": s, "backend": backend}
            for name, fn in (("dp", dp), ("log_gak_D256", gak)):
                for grad in (False, True):
                    first, median = _median_ms(lambda f=fn, gr=grad: f(gr), device, repeats)
                    key = f"{name}_{'fwd_bwd' if grad else 'fwd'}"
                    row[f"{key}_ms"] = round(median, 3)
                    row[f"{key}_first_call_ms"] = round(first, 1)
            results.append(row)
            print(row)
        os.environ["SUGAR_ALIGN_BACKEND"] = "auto"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_align.json"))
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton decorates the kernels
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch
    import triton

    from sugar.align import _triton
    from sugar.io import atomic_write_json

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --device cpu to try the script")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "interpreted": _triton.INTERPRETED,
    }
    print(report)
    small = args.device == "cpu"
    report["parity"] = parity(args.device, pairs=6 if small else 512, steps=4 if small else 24)
    report["public_parity"] = public_parity(args.device)
    sizes = [(3, 4)] if small else [(32, 8), (32, 32), (128, 8), (128, 32), (512, 32)]
    report["timings_ms"] = timings(args.device, sizes, 2 if small else args.repeats)
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
