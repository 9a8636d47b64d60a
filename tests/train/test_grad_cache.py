"""GradCache (``train.embedding_chunk``, sugar.train.grad_cache) gives the gradients of the single
pass: the reference is the objective's own one-pass forward and backward, in float64 on the tiny
model, for L_d with every predicted kernel and for InfoNCE."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import torch

from sugar.config import load_config
from sugar.data.jsonl import read_samples
from sugar.losses import LossWeights, StructureOptions
from sugar.losses.structure import PredictedKernel
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.strict import ConfigError
from sugar.train.distributed import DataParallel, Shard
from sugar.train.grad_cache import cached_forward_backward
from sugar.train.guard import compare_configs
from sugar.train.loop import train
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher

SETTINGS = {
    "width": 32, "layers": 2, "heads": 2, "vision": "vit", "image_size": 32, "vit_patch": 16,
}  # fmt: skip


def _setup(
    root: Path, weights: LossWeights, kernel: PredictedKernel, dropout: float = 0.0
) -> tuple[TinyMLLM, SugarObjective, list, list]:
    stories = read_samples(root / "story" / "train.jsonl", root)[:2]
    captions = read_samples(root / "caption" / "train.jsonl", root)[:4]
    retrieval = [view for source in captions + stories for view in retrieval_pair(source)]
    texts = [s.text for x in stories + captions for s in x.segments if s.text]
    torch.manual_seed(0)
    model = TinyMLLM(Tokenizer.train(texts, 300), dropout=dropout, **SETTINGS)  # type: ignore[arg-type]
    options = StructureOptions(
        gak_normalisation="cosine", projector_dim=8, prefixes_per_sample=2,
        same_sample_target="kernel", predicted_kernel=kernel,
    )  # fmt: skip
    objective = SugarObjective(
        model.hidden_size, weights, options, delta=0.9, teacher=FakeTeacher()
    )
    # the ViT's pixels arrive in float32: cast them to the float64 of the test
    model.vision.patchify.register_forward_pre_hook(lambda _, args: (args[0].double(),))
    return model.double(), objective.double(), list(captions), retrieval


def _gradients(model: TinyMLLM, objective: SugarObjective) -> dict[str, torch.Tensor]:
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    out = {n: p.grad.clone() for n, p in named if p.requires_grad and p.grad is not None}
    for _, parameter in named:
        parameter.grad = None
    return out


CASES = [
    *[(LossWeights(alpha=1.0), kernel) for kernel in get_args(PredictedKernel)],
    (LossWeights(alpha=0.0, contrastive=1.0), "local"),
    (LossWeights(alpha=0.5, contrastive=1.0), "learned"),
]


@pytest.mark.parametrize(
    ("weights", "kernel"), CASES, ids=["ld-local", "ld-cosine", "ld-learned", "infonce", "both"]
)
def test_grad_cache_gradients_equal_the_single_pass(
    loop_world: Path, weights: LossWeights, kernel: PredictedKernel
) -> None:
    model, objective, samples, retrieval = _setup(loop_world, weights, kernel)
    single = objective(
        model, samples, loop_world, torch.Generator().manual_seed(5), None, retrieval
    )
    single["loss"].backward()
    reference = _gradients(model, objective)

    parallel = DataParallel(model, objective, Shard())
    calls = []
    original = model.forward
    model.forward = lambda batch: calls.append(batch) or original(batch)  # type: ignore[method-assign]
    cached = cached_forward_backward(
        parallel, samples, retrieval, loop_world, torch.Generator().manual_seed(5), Shard(), 3
    )
    chunked = _gradients(model, objective)

    retrieval_passes = len(calls) - 1  # one generative pass over the 4 captions
    assert retrieval_passes >= 2 * 4  # 12 retrieval samples in chunks of at most 3, twice
    for name in ("loss", "lm_loss", "structure_loss", "contrastive_loss"):
        if name in single:
            torch.testing.assert_close(cached[name], single[name].detach(), rtol=0, atol=1e-10)
    assert chunked.keys() == reference.keys()
    assert "objective.projector.linear.weight" in reference or any(
        n.startswith("objective.projector") for n in reference
    )
    if kernel == "learned":
        assert "objective.log_bandwidth" in reference
    if weights.contrastive:
        assert "objective.logit_scale" in reference
    for name, grad in reference.items():
        torch.testing.assert_close(
            chunked[name], grad, rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_grad_cache_replays_the_dropout_masks(loop_world: Path) -> None:
    """With attention dropout on, the re-run of a chunk draws the masks its cached pass drew: one
    chunk of 32 makes the partition the single pass makes, so from the same random state the
    two paths see the same masks and give the same gradients (a re-run with fresh masks does
    not)."""
    weights = LossWeights(alpha=1.0, contrastive=1.0)
    model, objective, samples, retrieval = _setup(loop_world, weights, "local", dropout=0.3)
    torch.manual_seed(7)
    single = objective(
        model, samples, loop_world, torch.Generator().manual_seed(5), None, retrieval
    )
    single["loss"].backward()
    reference = _gradients(model, objective)
    torch.manual_seed(7)
    cached_forward_backward(
        DataParallel(model, objective, Shard()), samples, retrieval, loop_world,
        torch.Generator().manual_seed(5), Shard(), 32,
    )  # fmt: skip
    chunked = _gradients(model, objective)
    for name, grad in reference.items():
        torch.testing.assert_close(
            chunked[name], grad, rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_grad_cache_refuses_hard_negatives(loop_world: Path) -> None:
    model, objective, samples, retrieval = _setup(
        loop_world, LossWeights(alpha=0.0, contrastive=1.0), "local"
    )
    objective.hard_negatives = 1
    with pytest.raises(ValueError, match="hard_negatives"):
        cached_forward_backward(
            DataParallel(model, objective, Shard()), samples, retrieval, loop_world, None,
            Shard(), 3,
        )  # fmt: skip


def test_embedding_chunk_is_validated_and_may_change_on_resume(
    loop_world: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="embedding_chunk=-1"):
        load_config(None, ["train.embedding_chunk=-1", "train.retrieval_batch=4"])
    with pytest.raises(ConfigError, match="needs a retrieval micro-batch"):
        load_config(None, ["train.embedding_chunk=8"])
    cfg = tiny_config(
        loop_world, tmp_path / "run", "train.retrieval_batch=2", "train.embedding_chunk=2",
        "contrastive.hard_negatives=1", "contrastive.weight=1.0",
    )  # fmt: skip
    with pytest.raises(ValueError, match="hard_negatives=1"):
        train(cfg, teacher=FakeTeacher(), progress=False)
    # memory, not the gradients: a resume may change it without --allow-changes
    saved, now = {"train": {"embedding_chunk": 0}}, {"train": {"embedding_chunk": 16}}
    assert compare_configs(saved, now, False, "step-2") == {}
