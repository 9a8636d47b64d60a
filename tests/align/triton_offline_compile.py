"""Compile every variant of sugar.align's Triton kernels for CUDA targets, without a GPU.

    python tests/align/triton_offline_compile.py 80 90     # compute capabilities

triton lowers each kernel through its IRs to PTX and runs the ptxas its wheel ships, so type
errors, globals that are not constexpr and the like (which the interpreter, used by
tests/align/test_triton.py, does not see) show up on a machine without a GPU. Prints one line
per variant and exits non-zero on the first failure. Run in a fresh process: the kernels must
be imported without TRITON_INTERPRET.
"""

from __future__ import annotations

import itertools
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sugar.align._triton_kernels import backward_kernel, forward_kernel


def signature(kernel: object, dtype: str, constexprs: dict) -> dict[str, str]:
    """Argument types as a launch on (P, N, M) tensors of ``dtype`` would specialise them."""
    types = {}
    for name in kernel.arg_names:  # type: ignore[attr-defined]
        if name in constexprs:
            types[name] = "constexpr"
        elif name in ("lengths_x", "lengths_y"):
            types[name] = "*i64"
        elif name.startswith(("stride_", "grid_")) or name in ("n", "m"):
            types[name] = "i32"
        else:
            types[name] = f"*{dtype}"
    return types


def variants() -> list[tuple[object, str, dict]]:
    out: list[tuple[object, str, dict]] = []
    for dtype, kind, table, shares in itertools.product(
        ("fp32", "fp64"), (0, 1), (False, True), (False, True)
    ):
        flags = dict(KIND=kind, KEEP_TABLE=table, KEEP_SHARES=shares, BLOCK=64)
        out.append((forward_kernel, dtype, flags))
    for dtype, kind, grid in itertools.product(("fp32", "fp64"), (0, 1), (False, True)):
        out.append((backward_kernel, dtype, dict(KIND=kind, USE_GRID=grid, BLOCK=64)))
    return out


def main(arches: list[int]) -> None:
    for arch in arches:
        target = GPUTarget("cuda", arch, 32)
        for kernel, dtype, flags in variants():
            source = ASTSource(kernel, signature(kernel, dtype, flags), flags)
            compiled = triton.compile(source, target=target, options={"num_warps": 1})
            ptx = compiled.asm["ptx"]
            # the diagonal-to-diagonal shift needs the barrier and uncached (volatile) loads
            assert "bar.sync" in ptx or "barrier.sync" in ptx, "no barrier in the PTX"
            assert "ld.volatile" in ptx, "no volatile load in the PTX"
            assert compiled.asm.get("cubin"), "ptxas produced no cubin"
            print(f"sm_{arch} {kernel.__name__} {dtype} {flags}: ok")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [90])
