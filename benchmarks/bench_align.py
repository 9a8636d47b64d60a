"""Speed of sugar.align against tslearn and pysdtw, and against this machine's floor.

Prints figures; it is not a test. All-pairs soft-DTW and log-GAK over B sequences of S steps of
D features (unit vectors, float32, gamma 0.1), forward and forward+backward, B in {32, 128},
S in {8, 32}, D in {256, 1024}; the precomputed-cost anchor (B=128, S=32); and Sugar's own
regime: forward-only Triple-Kernel GAK targets for n = 96 prefixes of up to 10 slices.

    python benchmarks/bench_align.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_align.py --quick    # B=32 only

Fairness: same threads for everyone (``--threads``, default 1; numba gets the same number and
the workqueue layer), timed warm (a first call compiles numba kernels and is not timed), the
median of ``--repeats`` (>= 5) runs, each library through its public functions. tslearn's and
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

THREADS = 1


def _configure_threads(threads: int) -> None:
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: numba compilation, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="B = 32 only")
    parser.add_argument("--no-baselines", action="store_true", help="skip tslearn and pysdtw")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    _configure_threads(args.threads)

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
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {r} warm runs\n")

    # ---- machine floor
    a = torch.randn(1024, 1024)
    gemm = _time(lambda: a @ a, r)
    gflops = 2 * 1024**3 / gemm / 1e9
    e = torch.randn(64, 16384)
    out = torch.empty_like(e)
    exp_s = _time(lambda: torch.exp(e, out=out), r)
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
    sizes = [
        (b, s, d)
        for b in ((32,) if args.quick else (32, 128))
        for s in (8, 32)
        for d in (256, 1024)
    ]
    for b, s, d in sizes:
        x = torch.nn.functional.normalize(torch.randn(b, s, d), dim=-1)
        xn = x.double().numpy()
        for backward in (False, True):
            tag = "fwd+bwd" if backward else "fwd"

            def ours_sdtw(x: torch.Tensor = x, backward: bool = backward) -> None:
                xi = x.clone().requires_grad_(backward)
                value = align.cdist_soft_dtw(xi, gamma=0.1)
                if backward:
                    value.sum().backward()

            def ours_gak(x: torch.Tensor = x, backward: bool = backward) -> None:
                xi = x.clone().requires_grad_(backward)
                value = align.cdist_log_gak(xi, sigma=1.0)
                if backward:
                    value.sum().backward()

            for name, fn in (("soft-DTW", ours_sdtw), ("log-GAK", ours_gak)):
                t = _time(fn, r)
                row = f"{name} B={b} S={s} D={d} {tag}"
                extra = []
                if tslearn_metrics is not None and not backward:
                    if name == "soft-DTW":
                        tt = _time(lambda: tslearn_metrics.cdist_soft_dtw(xn, gamma=0.1), r)
                        extra.append(f"tslearn.cdist_soft_dtw {1e3 * tt:.0f} ({tt / t:.1f}x)")
                    else:
                        tt = _time(lambda: tslearn_metrics.cdist_gak(xn, sigma=1.0), r)
                        extra.append(f"tslearn.cdist_gak {1e3 * tt:.0f} ({tt / t:.1f}x)")
                print(
                    f"{row:<44}{1e3 * t:>9.1f}{floor_ms(b, s, d, backward):>8.1f}  "
                    + "; ".join(extra)
                )

    # ---- the precomputed-cost anchor (KERNEL_NOTES.md): B=128, S=32, cosine cost, gamma 0.1
    print()
    for b, s in ((32, 32),) if args.quick else ((32, 32), (128, 32)):
        x = torch.nn.functional.normalize(torch.randn(b, s, 64), dim=-1)
        cost_bbss = align.cdist_cost(x, x, "cosine")
        # pairs innermost in memory: the layout sugar's DP reads without a copy
        cost = cost_bbss.permute(2, 3, 0, 1).contiguous().reshape(s, s, b * b).permute(2, 0, 1)
        cost_rowmajor = cost.contiguous()  # what a paired-loss library expects
        for backward in (False, True):
            tag = "fwd+bwd" if backward else "fwd"

            def ours(backward: bool = backward, cost: torch.Tensor = cost) -> None:
                c = cost.detach().requires_grad_(backward)
                value = align.soft_dtw_from_cost(c, gamma=0.1)
                if backward:
                    value.sum().backward()

            t = _time(ours, r)
            extra = []
            if tslearn_metrics is not None:
                loss = tslearn_metrics.SoftDTWLossPyTorch(
                    gamma=0.1, dist_func=lambda _x, _y, c=cost_rowmajor: c
                )
                dummy = torch.zeros(b * b, s, 1)

                def theirs(loss: Callable = loss, backward: bool = backward) -> None:
                    if backward:
                        cost_rowmajor.requires_grad_(True)
                        loss(dummy, dummy).sum().backward()
                        cost_rowmajor.grad = None
                        cost_rowmajor.requires_grad_(False)
                    else:
                        with torch.no_grad():
                            loss(dummy, dummy)

                tt = _time(theirs, r)
                extra.append(f"tslearn SoftDTWLossPyTorch {1e3 * tt:.0f} ({tt / t:.1f}x)")
            if pysdtw is not None:
                sdtw = pysdtw.SoftDTW(
                    gamma=0.1, dist_func=lambda _x, _y, c=cost_rowmajor: c, use_cuda=False
                )
                dummy = torch.zeros(b * b, s, 1)

                def theirs_p(backward: bool = backward) -> None:
                    if backward:
                        cost_rowmajor.requires_grad_(True)
                        sdtw(dummy, dummy).sum().backward()
                        cost_rowmajor.grad = None
                        cost_rowmajor.requires_grad_(False)
                    else:
                        with torch.no_grad():
                            sdtw(dummy, dummy)

                tp = _time(theirs_p, r)
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
    t = _time(targets, max(r, 20))
    print(
        f"{'Sugar targets n=96 prefixes, S<=10 (TK, fwd)':<44}{1e3 * t:>9.1f}  (target: <= 15 ms)"
    )


if __name__ == "__main__":
    main()
