"""FSDP2 on the Hugging Face LoRA path: each decoder layer of a tiny random LLaVA holds frozen
base weights and trainable LoRA adapters in one FSDP group, the root group the frozen vision
tower, projector, embeddings and head beside the objective's trainable projector. Two gloo
processes give one process's L_g + InfoNCE loss and LoRA/projector gradients, and no frozen
weight receives a gradient; the AdamW step that follows matches too (LoRA's A matrices, whose
gradient is an exact zero while B is zero, decay as in one process). float32 (the processor's
pixels): the gradient tolerance is the DDP parity test's, 1e-5 of each gradient's own scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sugar.data.schema import Sample, Segment
from sugar.losses import LossWeights, StructureOptions
from sugar.models.base import backbone_class
from sugar.train.distributed import DataParallel, Shard
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair
from tests.models.hf_checkpoints import llava_checkpoint, write_images
from tests.train.gloo_ranks import on_two_gloo_ranks

CAPTIONS = ["a red circle .", "two dogs left of a star .", "the cat is big .", "a blue square ."]
IMAGES = ["img/wide.png", "img/tall.png", "img/big.png", "img/square.png"]


def _samples() -> list[Sample]:
    return [
        Sample(f"c{i}", [Segment.image_(image), Segment.text_(caption, role="target")],
               meta={"task": "caption"})
        for i, (image, caption) in enumerate(zip(IMAGES, CAPTIONS, strict=True))
    ]  # fmt: skip


def _run(root: Path, shard: Shard | None) -> dict[str, Any]:
    model = backbone_class("hf-llava").create(str(root / "hf-llava"), lora_rank=4)
    # the same adapters in every process (peft draws A from the global generator, which the
    # processes do not consume alike); B stays zero, so A's gradient is an exact zero that
    # autograd computes: AdamW must still decay A, as in one process
    for module in model.modules():  # LoRA's dropout draws other masks in other processes
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    torch.manual_seed(0)  # the retrieval projector's initialisation
    objective = SugarObjective(
        model.hidden_size, LossWeights(alpha=0.0, contrastive=1.0),
        StructureOptions(projector_dim=8),
    )  # fmt: skip
    samples = _samples()
    retrieval = [view for sample in samples for view in retrieval_pair(sample)]
    parallel = DataParallel(
        model, objective, shard or Shard(), engine="fsdp2", layers=model.decoder_layers()
    )
    parts = parallel.forward_backward(
        lambda model, objective: objective(model, samples, root, None, shard, retrieval)
    )
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    trainable = [p for _, p in named if p.requires_grad]
    parallel.clip_gradients(trainable, float("inf"))
    grads = {name: _whole(p.grad) for name, p in named if p.grad is not None}
    torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1).step()
    after = {name: _whole(p) for name, p in named if p.requires_grad}
    frozen = sum(1 for _, p in named if not p.requires_grad)
    losses = {k: parts[k].detach() for k in ("loss", "lm_loss", "contrastive_loss")}
    return {"losses": losses, "grads": grads, "after": after, "frozen": frozen}


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    full = getattr(tensor, "full_tensor", None)  # a DTensor: a collective, in the same order
    return (full() if full is not None else tensor).detach().clone()


def _on_rank(rank: int, root: str) -> dict[str, Any]:
    return _run(Path(root), Shard(rank, 2, lockstep=True))


@pytest.mark.slow
def test_fsdp2_lora_layers_equal_one_process(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    write_images(root)
    llava_checkpoint(root / "hf-llava")
    sharded = on_two_gloo_ranks(_on_rank, str(root), tmp_path=tmp_path)
    single = _run(root, None)
    for name, value in single["losses"].items():
        torch.testing.assert_close(sharded["losses"][name], value, rtol=1e-6, atol=1e-7)
    assert sharded["grads"].keys() == single["grads"].keys()
    assert any("lora_" in name for name in single["grads"])
    assert any(name.startswith("objective.projector") for name in single["grads"])
    assert all("lora_" in n or n.startswith("objective") for n in single["grads"]), sorted(
        single["grads"]
    )[:4]
    assert single["frozen"] > 0
    for name, grad in single["grads"].items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(
            sharded["grads"][name], grad, atol=1e-5 * scale + 1e-8, rtol=1e-5,
            msg=lambda m, n=name: f"{n}: {m}",
        )  # fmt: skip
    zero = [n for n, g in single["grads"].items() if "lora_A" in n and not bool(g.any())]
    assert zero  # A's exact-zero gradient: kept, not dropped as unused
    for name, value in single["after"].items():  # one AdamW step (lr 1e-2)
        torch.testing.assert_close(
            sharded["after"][name], value, rtol=0, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
