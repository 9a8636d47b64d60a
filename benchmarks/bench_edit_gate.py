"""UniKE's key-token gate (sugar.edit.keys): the cost of deciding, at one forward, which edits'
key spans the sequence so far holds, for E edits: one scan per edit (:func:`spans_seen`, what
the gate did until issue 23's follow-up) against all edits in one pass
(:class:`KeySpanIndex`). Each edit has 1-2 key spans of 1-4 tokens (a code's word pieces, a
name), drawn from a 30k vocabulary; the ids are random, so few spans are found (the common
case). Rows: a full forward over B sequences of L tokens, and one cached decoding step (the
newest token of an L-token sequence), which is what generation with edits pays per token.
Then UniKE's whole memory forward (:class:`sugar.edit.unike.UnifiedMemory`: slot scores, the
key check, the retrieved values) at one decoding step of an 8 x 200 batch, 2 slots per edit,
width 384.

    python benchmarks/bench_edit_gate.py            # 1 thread, median of 20 calls (wall)
"""

from __future__ import annotations

import argparse
import random
from functools import partial

import torch
from _timing import median_time

from sugar.edit.keys import KeySpanIndex, spans_seen
from sugar.edit.scope import ScopeSpace
from sugar.edit.unike import UnifiedMemory


def per_edit_scan(ids: torch.Tensor, edits: list[list[list[int]]], last: int) -> torch.Tensor:
    """The reference: one spans_seen per edit, then the last positions. # -> (B, last, E)"""
    return torch.stack([spans_seen(ids, spans)[:, -last:] for spans in edits], dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    cases = [("forward B=1 L=64", 1, 64, 64), ("forward B=8 L=200", 8, 200, 200),
             ("decode step B=1 L=64", 1, 64, 1), ("decode step B=8 L=200", 8, 200, 1)]  # fmt: skip
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats} calls (wall ms)\n")
    print(f"{'case':<24}{'edits':>7}{'per-edit scan':>15}{'one pass':>10}{'ratio':>8}")
    for count in args.edits:
        edits = [[[rng.randrange(30_000) for _ in range(rng.randint(1, 4))]
                  for _ in range(rng.randint(1, 2))] for _ in range(count)]  # fmt: skip
        index = KeySpanIndex(edits)
        for name, batch, length, last in cases:
            ids = torch.randint(0, 30_000, (batch, length))
            ids[0, 5 : 5 + len(edits[0][0])] = torch.tensor(edits[0][0])  # one found span
            assert torch.equal(index.seen(ids, last), per_edit_scan(ids, edits, last))
            scan = median_time(partial(per_edit_scan, ids, edits, last), args.repeats)
            one = median_time(partial(index.seen, ids, last), args.repeats)
            print(f"{name:<24}{count:>7}{scan * 1e3:>15.2f}{one * 1e3:>10.2f}{scan / one:>7.0f}x")
    print(f"\n{'UniKE memory forward, decode step B=8 L=200':<46}{'edits':>7}{'ms':>8}")
    for count in args.edits:
        print(f"{'':<46}{count:>7}{memory_forward(count, rng, args.repeats) * 1e3:>8.2f}")


def memory_forward(count: int, rng: random.Random, repeats: int) -> float:
    """Seconds per UnifiedMemory forward of one new token, ``count`` edits stored."""
    ids = torch.randint(0, 30_000, (8, 200))
    memory = UnifiedMemory(0.3, ScopeSpace(384, 128), lambda: ids)
    for edit in range(count):
        keys = torch.nn.functional.normalize(torch.randn(2, 128), dim=-1)
        spans = [[rng.randrange(30_000) for _ in range(rng.randint(1, 4))]]
        memory.put(f"e{edit}", (keys, torch.randn(2, 384)), torch.randn(2, 384), spans)
    hidden = torch.randn(8, 1, 384)
    with torch.no_grad():
        return median_time(partial(memory, hidden), repeats)


if __name__ == "__main__":
    main()
