"""Gradient checkpointing (``model.gradient_checkpointing``, the Hugging Face families) under both
data-parallel engines: a tiny random LLaVA with LoRA adapters (the GPU recipe's shape: frozen
base, trainable adapters, non-reentrant checkpointing of each decoder layer), L_g + L_d with a
learned bandwidth + InfoNCE, on two gloo processes under ``ddp`` and ``fsdp2`` against one
process over the same global batch.

- float64 (the processor's pixels follow the weights' dtype): losses, gradients and the AdamW
  step within 1e-10 (L_g's cross-entropy runs in float32 in every process, so its loss is
  compared at float32's tolerance); measured: gradients within 2.2e-15, the step within 5.6e-17.
  One process with checkpointing gives exactly the gradients of one process without it.
- Each decoder layer really recomputes: its MLP runs twice per forward-backward pass (a
  forward pre-hook counts it: non-reentrant checkpointing stops the recomputation once the
  last saved tensor is back, inside the MLP's last product, so a post-hook would not see it).
  Under FSDP2 the recomputation runs inside the layer's ``forward`` while FSDP's hooks stay on
  ``__call__`` (transformers' ``GradientCheckpointingLayer``), so a block is gathered once per
  forward and once per backward.
- float32 under bfloat16 autocast with checkpointing (what a GPU run sets): the noise-based
  checks of ``tests/train/test_parallel_minilm.py``; measured: all gradients 0.089 of
  bfloat16's own noise away from one process, the worst tensor 0.19 of its own, the losses
  within 8.3e-5 relative. ``pytest -rP`` prints these figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from sugar.losses import LossWeights, StructureOptions
from sugar.models.base import backbone_class
from sugar.train.distributed import DataParallel, Shard
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair
from tests.models.hf_checkpoints import llava_checkpoint, write_images
from tests.train.fake_teacher import FakeTeacher
from tests.train.gloo_ranks import on_two_gloo_ranks
from tests.train.test_fsdp2_lora import _samples
from tests.train.test_parallel_minilm import bfloat16_check

ENGINES = ("ddp", "fsdp2")
PARTS = ("loss", "lm_loss", "structure_loss", "contrastive_loss")
EXACT = {"rtol": 0.0, "atol": 1e-10}


def _whole(tensor: Tensor) -> Tensor:
    full = getattr(tensor, "full_tensor", None)  # a DTensor: a collective, in the same order
    return (full() if full is not None else tensor).detach().clone()


def _run(
    root: Path, engine: str, shard: Shard | None, *, checkpointing: bool = True,
    precision: str = "float64",
) -> dict[str, Any]:  # fmt: skip
    """One forward-backward on ``shard`` (None: one process), the loop's clip call and one
    AdamW step; ``precision``: float64, float32, or bfloat16 (float32 weights, bfloat16
    autocast)."""
    autocast = "bfloat16" if precision == "bfloat16" else "none"
    model = backbone_class("hf-llava").create(
        str(root / "hf-llava"), lora_rank=4, lora_dropout=0.0,
        gradient_checkpointing=checkpointing, autocast=autocast,  # type: ignore[arg-type]
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)  # the same adapters in every process
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:  # B too: every adapter gets a gradient that is not zero
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.train()  # transformers checkpoints only in training mode
    torch.manual_seed(0)  # the retrieval projector's initialisation
    objective = SugarObjective(
        model.hidden_size, LossWeights(alpha=1.0, contrastive=1.0),
        StructureOptions(projector_dim=8, gak_normalisation="cosine",
                         predicted_kernel="learned", prefixes_per_sample=2),
        delta=0.9, teacher=FakeTeacher(),
    )  # fmt: skip
    if precision == "float64":
        model, objective = model.double(), objective.double()
    mlp_runs = [0]
    for layer in model.decoder_layers():
        layer.mlp.register_forward_pre_hook(lambda *_: mlp_runs.__setitem__(0, mlp_runs[0] + 1))
    samples = _samples()
    retrieval = [view for sample in samples for view in retrieval_pair(sample)]
    parallel = DataParallel(
        model, objective, shard or Shard(), engine=engine,  # type: ignore[arg-type]
        layers=model.decoder_layers(),
    )  # fmt: skip
    parts = parallel.forward_backward(
        lambda model, objective: objective(
            model, samples, root, torch.Generator().manual_seed(5), shard, retrieval
        )
    )
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    trainable = [p for _, p in named if p.requires_grad]
    norm = parallel.clip_gradients(trainable, float("inf"))
    grads = {name: _whole(p.grad) for name, p in named if p.grad is not None}
    torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1).step()
    return {
        "losses": {name: parts[name].detach() for name in PARTS},
        "grad_norm": norm.detach(),
        "grads": grads,
        "after": {name: _whole(p) for name, p in named if p.requires_grad},
        "mlp_runs": mlp_runs[0],
        "layers": len(model.decoder_layers()),
    }


def _on_rank(rank: int, root: str) -> dict[str, Any]:
    results = {}
    for engine in ENGINES:
        shard = Shard(rank, 2, lockstep=engine == "fsdp2")
        results[engine] = _run(Path(root), engine, shard)
        results[f"{engine}-bfloat16"] = _run(Path(root), engine, shard, precision="bfloat16")
    return results


@pytest.mark.slow
def test_gradient_checkpointing_on_two_gloo_processes_equals_one_process(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    write_images(root)
    llava_checkpoint(root / "hf-llava")
    two = on_two_gloo_ranks(_on_rank, str(root), tmp_path=tmp_path)
    single = _run(root, "ddp", None)
    plain = _run(root, "ddp", None, checkpointing=False)

    passes = 2  # L_g's micro-batch and the retrieval micro-batch, one chunk each
    assert plain["mlp_runs"] == passes * plain["layers"]
    assert single["mlp_runs"] == 2 * passes * single["layers"]  # each layer recomputed once
    for name in single["grads"]:  # checkpointing changes no gradient
        torch.testing.assert_close(single["grads"][name], plain["grads"][name], rtol=0, atol=0)
    adapters = {part for name in single["grads"] for part in name.split(".") if "lora_" in part}
    assert adapters == {"lora_A", "lora_B"}, adapters
    assert {"objective.log_bandwidth", "objective.logit_scale"} <= single["grads"].keys()

    rounded = _run(root, "ddp", None, precision="bfloat16")
    reference = _run(root, "ddp", None, precision="float32")
    for engine in ENGINES:
        run = two[engine]
        assert run["mlp_runs"] == single["mlp_runs"], engine  # half the batch, same passes
        for name, value in single["losses"].items():
            tolerance = EXACT if name == "structure_loss" else {}  # L_g: float32 (module doc)
            torch.testing.assert_close(
                run["losses"][name].double(), value.double(), **tolerance,
                msg=lambda m, label=f"{engine} {name}": f"{label}: {m}",
            )  # fmt: skip
        for part in ("grads", "after"):
            assert run[part].keys() == single[part].keys(), (engine, part)
            largest = max(float((run[part][n] - v).abs().max()) for n, v in single[part].items())
            print(f"{engine} float64 {part}: largest difference {largest:.2g}")  # pytest -rP
            for name, value in single[part].items():
                torch.testing.assert_close(
                    run[part][name], value, **EXACT,
                    msg=lambda m, label=f"{engine} {part} {name}": f"{label}: {m}",
                )  # fmt: skip
        failures, figures = bfloat16_check(two[f"{engine}-bfloat16"], rounded, reference)
        print(f"{engine} bfloat16: {figures}")  # pytest -rP shows the figures
        assert failures == [], engine
