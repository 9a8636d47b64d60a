"""Speed of sugar.align against tslearn and pysdtw, and against this machine's floor.

Prints figures; it is not a test. All-pairs soft-DTW and log-GAK over B sequences of S steps of
D features (unit vectors, float32, gamma 0.1), forward and forward+backward, B in {32, 128},
S in {8, 32}, D in {256, 1024}; the precomputed-cost anchor (B=128, S=32); and Sugar's own
regime: forward-only Triple-Kernel GAK targets for n = 96 prefixes of up to 10 slices.

    python benchmarks/bench_align.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_align.py --quick    # B=32 only
    python benchmarks/bench_align.py --backend torch   # the reference torch DP instead

Fairness: same threads for everyone (``--threads``, default 1; numba gets the same number and
the workqueue layer), timed warm (a first call compiles numba kernels and is not timed), the
median of ``--repeats`` (>= 5) runs, each library through its public functions. ``--clock cpu``
(the default with one thread) reads this process's CPU time, so that other work on a shared
machine disturbs the figures less; ``--clock wall`` reads elapsed time (forced with more than
one thread). sugar's all-pairs functions of one set compute each unordered pair once, as
tslearn's do (the printed floor is that of all B x B pairs). tslearn's and
pysdtw's losses take paired batches, so all-pairs runs hand them the B*B pairs' cost matrix
through their ``dist_func`` hook (the cost itself is not timed for them: a small advantage to
them). tslearn's ``cdist_soft_dtw`` / ``cdist_gak`` compute their own costs (forward only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

THREADS = 1
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def median_time(fn: Callable[[], object], repeats: int, clock: str = "cpu") -> float:
    """Seconds: the median of ``repeats`` calls of ``fn`` after one untimed warm-up call,
    read on ``clock``: ``cpu`` (this process's CPU time: with one thread, what the work cost,
    less disturbed by other processes on a shared machine) or ``wall``."""
    read = CLOCKS[clock]
    fn()
    times = []
    for _ in range(repeats):
        start = read()
        fn()
        times.append(read() - start)
    return statistics.median(times)


def _configure_threads(threads: int) -> None:
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    os.environ["OMP_NUM_THREADS"] = str(threads)


class _Fixed:
    """A ``dist_func`` that returns a precomputed cost, whatever its arguments."""

    def __init__(self, cost: Any) -> None:
        self.cost = cost

    def __call__(self, *_: Any) -> Any:
        return self.cost


def _run_ours(fn: Callable[..., Any], x: Any, backward: bool) -> None:
    xi = x.clone().requires_grad_(backward)
    value = fn(xi)
    if backward:
        value.sum().backward()


def _run_cost(fn: Callable[..., Any], cost: Any, backward: bool) -> None:
    c = cost.detach().requires_grad_(backward)
    value = fn(c, gamma=0.1)
    if backward:
        value.sum().backward()


def _run_loss(loss: Callable[..., Any], cost: Any, dummy: Any, backward: bool) -> None:
    """A paired loss whose dist_func returns ``cost``; the gradient flows into ``cost``."""
    import torch

    if not backward:
        with torch.no_grad():
            loss(dummy, dummy)
        return
    cost.requires_grad_(True)
    try:
        loss(dummy, dummy).sum().backward()
    finally:
        cost.grad = None
        cost.requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--quick", action="store_true", help="B = 32 only")
    parser.add_argument("--no-baselines", action="store_true", help="skip tslearn and pysdtw")
    parser.add_argument(
        "--backend",
        choices=["auto", "compiled", "torch"],
        default="auto",
        help="sugar.align's DP implementation (SUGAR_ALIGN_BACKEND)",
    )
    args = parser.parse_args()
    os.environ["SUGAR_ALIGN_BACKEND"] = args.backend
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    _configure_threads(args.threads)
    clock = args.clock if args.threads == 1 else "wall"
    timed = partial(median_time, clock=clock)

    import torch

    torch.set_num_threads(args.threads)
    from sugar import align

    baselines = not args.no_baselines
    tslearn_metrics = pysdtw = None
    if baselines:
        try:
            import tslearn.metrics as tslearn_metrics
        except ImportError:
            print("tslearn not installed: its rows are skipped (pip install tslearn)")
        try:
            import pysdtw
        except ImportError:
            print("pysdtw not installed: its rows are skipped (pip install pysdtw)")

    r = args.repeats
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), median of {r} warm runs "
        f"({clock} time), backend {args.backend}\n"
    )

    # ---- machine floor
    a = torch.randn(1024, 1024)
    gemm = timed(lambda: a @ a, r)
    gflops = 2 * 1024**3 / gemm / 1e9
    e = torch.randn(64, 16384)
    out = torch.empty_like(e)
    exp_s = timed(lambda: torch.exp(e, out=out), r)
    gexp = e.numel() / exp_s / 1e9
    print(f"floor: matmul {gflops:.0f} GFLOP/s, exp {gexp:.2f} G/s (float32)\n")

    def floor_ms(b: int, s: int, d: int, backward: bool) -> float:
        """exp-bound DP (3 exp per cell forward, 3 more if recomputed backward) + the cost GEMM."""
        cells = b * b * s * s
        gemm_flops = 2 * (b * s) ** 2 * d * (3 if backward else 1)
        return 1e3 * (cells * 3 / (gexp * 1e9) + gemm_flops / (gflops * 1e9))

    header = f"{'case':<44}{'ours ms':>9}{'floor':>8}  baselines (ms, ratio = theirs / ours)"
    print(header)
    print("-" * len(header))
    batches = (32,) if args.quick else (32, 128)
    for b, s, d in [(b, s, d) for b in batches for s in (8, 32) for d in (256, 1024)]:
        x = torch.nn.functional.normalize(torch.randn(b, s, d), dim=-1)
        xn = x.double().numpy()
        for backward in (False, True):
            tag = "fwd+bwd" if backward else "fwd"
            for name, ours, theirs in (
                ("soft-DTW", partial(align.cdist_soft_dtw, gamma=0.1), "cdist_soft_dtw"),
                ("log-GAK", partial(align.cdist_log_gak, sigma=1.0), "cdist_gak"),
            ):
                t = timed(partial(_run_ours, ours, x, backward), r)
                extra = []
                if tslearn_metrics is not None and not backward:
                    kwargs = {"gamma": 0.1} if name == "soft-DTW" else {"sigma": 1.0}
                    tt = timed(partial(getattr(tslearn_metrics, theirs), xn, **kwargs), r)
                    extra.append(f"tslearn.{theirs} {1e3 * tt:.0f} ({tt / t:.1f}x)")
                row = f"{name} B={b} S={s} D={d} {tag}"
                floor = floor_ms(b, s, d, backward)
                print(f"{row:<44}{1e3 * t:>9.1f}{floor:>8.1f}  " + "; ".join(extra))

    # ---- the precomputed-cost anchor (KERNEL_NOTES.md): B=128, S=32, cosine cost, gamma 0.1
    print()
    for b, s in ((32, 32),) if args.quick else ((32, 32), (128, 32)):
        x = torch.nn.functional.normalize(torch.randn(b, s, 64), dim=-1)
        # pairs innermost in memory: the layout sugar's DP reads without a copy
        cost = align.cdist_cost(x, x, "cosine").reshape(b * b, s, s)
        rowmajor = cost.contiguous()  # what the paired-loss libraries take
        dummy = torch.zeros(b * b, s, 1)
        for backward in (False, True):
            tag = "fwd+bwd" if backward else "fwd"
            t = timed(partial(_run_cost, align.soft_dtw_from_cost, cost, backward), r)
            extra = []
            if tslearn_metrics is not None:
                loss = tslearn_metrics.SoftDTWLossPyTorch(gamma=0.1, dist_func=_Fixed(rowmajor))
                tt = timed(partial(_run_loss, loss, rowmajor, dummy, backward), r)
                extra.append(f"tslearn SoftDTWLossPyTorch {1e3 * tt:.0f} ({tt / t:.1f}x)")
            if pysdtw is not None:
                sdtw = pysdtw.SoftDTW(gamma=0.1, dist_func=_Fixed(rowmajor), use_cuda=False)
                tp = timed(partial(_run_loss, sdtw, rowmajor, dummy, backward), r)
                extra.append(f"pysdtw {1e3 * tp:.0f} ({tp / t:.1f}x)")
            dp_floor = 1e3 * b * b * s * s * (6 if backward else 3) / (gexp * 1e9)
            row = f"precomputed cost B={b} S={s} {tag}"
            print(f"{row:<44}{1e3 * t:>9.1f}{dp_floor:>8.1f}  " + "; ".join(extra))

    # ---- Sugar's regime: targets for n = 96 prefixes (48 samples x 2), up to 10 slices
    print()
    from sugar.align import SliceEmbeddings

    g = torch.Generator().manual_seed(0)
    samples, slices_max = 48, 10

    def unit(dim: int) -> torch.Tensor:
        return torch.nn.functional.normalize(
            torch.randn(samples, slices_max, dim, generator=g), dim=-1
        )

    lengths = torch.randint(2, slices_max + 1, (samples,), generator=g)
    emb = SliceEmbeddings(
        unit(1280),
        unit(384),
        unit(256),
        torch.rand(samples, slices_max, generator=g) < 0.5,
        lengths,
    )
    # two prefixes per sample: the last slice and a random earlier one
    sample_of = torch.arange(samples).repeat_interleave(2)
    end = torch.stack(
        [lengths - 1, (torch.rand(samples, generator=g) * (lengths - 1)).long()], 1
    ).reshape(-1)

    def targets() -> torch.Tensor:
        with torch.no_grad():
            table = align.cdist_gak_prefixes(emb, sigma=0.9)
            return table[sample_of[:, None], sample_of[None, :], end[:, None], end[None, :]]

    assert targets().shape == (96, 96)
    t = timed(targets, max(r, 20))
    print(
        f"{'Sugar targets n=96 prefixes, S<=10 (TK, fwd)':<44}{1e3 * t:>9.1f}  (target: <= 15 ms)"
    )
    _triple_kernel_cost_rows(timed, max(r, 20), args.backend)


def _triple_kernel_cost_rows(timed: Callable[..., float], repeats: int, backend: str) -> None:
    """The Triple-Kernel cost of Sugar's targets: the compiled assembly against the reference
    (index_put) path, at 48 samples (the row above) and 128 (the default recipe's retrieval
    micro-batch of 64 pairs), up to 10 slices of widths 1280 / 384 / 256."""
    import torch

    from sugar.align import SliceEmbeddings
    from sugar.align._fused_cost import fused_triple_kernel_cost
    from sugar.align.kernels import TypeMedians, triple_kernel_cost

    g = torch.Generator().manual_seed(1)
    for samples in (48, 128):
        vectors = [
            torch.nn.functional.normalize(torch.randn(samples, 10, d, generator=g), dim=-1)
            for d in (1280, 384, 256)
        ]
        is_text = torch.rand(samples, 10, generator=g) < 0.5
        lengths = torch.randint(2, 11, (samples,), generator=g)
        emb = SliceEmbeddings(*vectors, is_text, lengths)

        def reference(emb: SliceEmbeddings = emb) -> None:
            os.environ["SUGAR_ALIGN_BACKEND"] = "torch"  # the fused assembly steps aside
            try:
                triple_kernel_cost(emb, emb)
            finally:
                os.environ["SUGAR_ALIGN_BACKEND"] = backend

        fused = timed(partial(fused_triple_kernel_cost, emb, emb, TypeMedians()), repeats)
        ref = timed(reference, repeats)
        row = f"  TK cost, {samples} samples x <= 10 slices"
        print(f"{row:<44}{1e3 * fused:>9.1f}  reference path {1e3 * ref:.1f} ms")


if __name__ == "__main__":
    main()
