"""``train.parallel=fsdp2``: two gloo processes with FSDP2 (``fully_shard`` on each decoder block
and on the model with the objective) give the losses, the gradients and the AdamW update of one
process over the same global batch, for Sugar (with and without InfoNCE, a learned bandwidth),
CAFe-style, generative-only, GradCache, and blocks that mix frozen and trainable weights (as
LoRA's do). The harness is the DDP parity test's (tests/train/test_distributed.py), in float64:
the two runs differ only in the order of floating-point sums (all-gather, reduce-scatter, the
ranks' partial sums), so agreement to 1e-10 is what float64 allows with margin (float32 would
need about 1e-5 of each tensor's scale, as the DDP test does). Measured: losses and gradients
within 1e-12, parameters after the AdamW step within 3.2e-11."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sugar.train.distributed import DataParallel, Shard, equal_pass_counts
from sugar.train.grad_cache import cached_forward_backward
from sugar.train.run import parameter_groups
from tests.train.gloo_ranks import on_two_gloo_ranks
from tests.train.test_distributed import CASES as DDP_CASES
from tests.train.test_distributed import _setup

CASES = {
    **DDP_CASES,
    # the DDP test's generative-only batch (stories and split views) has no target token, so
    # its L_g and gradients are all zero; the captions of the separate batch have targets
    "generative-only": (0.0, 0.0, True, 0),
    "frozen-in-blocks": (1.0, 1.0, True, 0),
}
"""name: (alpha, InfoNCE weight, a separate retrieval batch, GradCache chunk)."""

TOLERANCE = {"rtol": 0.0, "atol": 1e-10}


def _frozen(name: str) -> bool:
    """The weights the frozen-in-blocks case freezes: each block's attention input (a LoRA
    base's frozen linear, beside trainable ones in the same FSDP group) and the ViT."""
    return name.endswith("qkv.weight") or name.startswith("vision.")


def _float64(world_root: Path, case: str) -> tuple[Any, Any, list, list | None]:
    alpha, contrastive, separate, _ = CASES[case]
    model, objective, samples, retrieval = _setup(world_root, separate, alpha, contrastive)
    model.vision.patchify.register_forward_pre_hook(lambda _, args: (args[0].double(),))
    if case == "frozen-in-blocks":
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(not _frozen(name))
    return model.double(), objective.double(), samples, retrieval


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    full = getattr(tensor, "full_tensor", None)  # a DTensor: a collective, in the same order
    return (full() if full is not None else tensor).detach().clone()


def _named(model: nn.Module, objective: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [*model.named_parameters(), *objective.named_parameters(prefix="objective")]


def _run(world_root: Path, case: str, shard: Shard | None) -> dict[str, dict[str, torch.Tensor]]:
    """The losses, the gradients (after the loop's clipping call, which drops the gradients no
    rank produced), the parameters after one AdamW step, and those before it, of ``case`` on
    ``shard`` under FSDP2 (None: one process, the objective's own forward and backward)."""
    _, _, _, chunk = CASES[case]
    model, objective, samples, retrieval = _float64(world_root, case)
    before = {name: p.detach().clone() for name, p in _named(model, objective)}
    generator = torch.Generator().manual_seed(5)
    parallel = DataParallel(
        model, objective, shard or Shard(), engine="fsdp2", layers=model.decoder_layers()
    )
    assert parallel.sharded == (shard is not None)
    if chunk:
        parts = cached_forward_backward(
            parallel, samples, retrieval or [], world_root, generator, shard or Shard(), chunk
        )
    else:
        parts = parallel.forward_backward(
            lambda model, objective: objective(
                model, samples, world_root, generator, shard, retrieval
            )
        )
    optimiser = torch.optim.AdamW(parameter_groups(model, [objective], 0.1, 1e-2), lr=1e-2)
    trainable = [p for group in optimiser.param_groups for p in group["params"]]
    norm = parallel.clip_gradients(trainable, float("inf"))
    named = _named(model, objective)
    grads = {n: _whole(p.grad) for n, p in named if p.requires_grad and p.grad is not None}
    optimiser.step()
    after = {n: _whole(p) for n, p in named}
    names = ("loss", "lm_loss", "structure_loss", "contrastive_loss")
    losses = {name: parts[name].detach() for name in names if name in parts}
    losses["grad_norm"] = norm.detach()
    # which parameters FSDP2 sharded (not the scalars, nor frozen ones outside the blocks)
    sharded = {n: torch.tensor(float(type(p).__name__ == "DTensor")) for n, p in named}
    return {"losses": losses, "grads": grads, "after": after, "before": before, "sharded": sharded}


def _on_rank(rank: int, world_root: str) -> dict[str, Any]:
    shard = Shard(rank, 2, lockstep=True)
    results: dict[str, Any] = {case: _run(Path(world_root), case, shard) for case in CASES}
    # rank 0 cut its share into one pass, rank 1 into three: rank 0 must run three too
    results["passes"] = equal_pass_counts(
        [[0, 1, 2, 3]] if rank == 0 else [[0], [1], [2, 3]], shard
    )
    return results


@pytest.mark.slow
def test_fsdp2_on_two_gloo_processes_equals_one_process(loop_world: Path, tmp_path: Path) -> None:
    double = on_two_gloo_ranks(_on_rank, str(loop_world), tmp_path=tmp_path)
    assert double["passes"] == [[0], [1], [2, 3]]
    for case in CASES:
        fsdp, single = double[case], _run(loop_world, case, None)
        for name, flag in fsdp["sharded"].items():  # sharded: all but scalars and frozen
            frozen_outside = case == "frozen-in-blocks" and name.startswith("vision.")  # blocks
            expected = fsdp["before"][name].dim() > 0 and not frozen_outside
            assert bool(flag) == expected, (case, name)
        for part in ("losses", "grads", "after"):
            assert fsdp[part].keys() == single[part].keys(), (case, part)
            for name, value in single[part].items():
                torch.testing.assert_close(
                    fsdp[part][name], value, **TOLERANCE,
                    msg=lambda m, label=f"{case} {part} {name}": f"{label}: {m}",
                )  # fmt: skip
        alpha, contrastive, _, _ = CASES[case]
        assert float(single["losses"]["grad_norm"]) > 0, case
        after_gather = {"objective.log_bandwidth"} if alpha else set()
        after_gather |= {"objective.logit_scale"} if contrastive else set()
        assert after_gather <= fsdp["grads"].keys(), case
        if not (alpha or contrastive):  # nothing used the projector: AdamW left it alone
            assert float(single["losses"]["lm_loss"]) > 0
            assert not any(n.startswith("objective") for n in fsdp["grads"]), case
            for name, value in fsdp["before"].items():
                if name.startswith("objective"):
                    assert torch.equal(fsdp["after"][name], value), name
        if case == "frozen-in-blocks":
            frozen = [n for n in fsdp["before"] if _frozen(n)]
            assert len(frozen) > 2 and not any(n in fsdp["grads"] for n in frozen)
            for name in frozen:
                assert torch.equal(fsdp["after"][name], fsdp["before"][name]), name
