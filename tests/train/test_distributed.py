"""Two gloo processes under DistributedDataParallel give the same losses and the same parameter
gradients as one process over the same global batch (METHOD.md section 5), including the
parameters used after the gather (a learned bandwidth, the InfoNCE temperature): for Sugar
(with and without InfoNCE), CAFe-style (InfoNCE alone), generative-only, and GradCache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from sugar.data.jsonl import read_samples
from sugar.data.views import apply_views
from sugar.losses import LossWeights, StructureOptions
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.train.distributed import SPARSE_ALL_REDUCE, DataParallel, Shard
from sugar.train.grad_cache import cached_forward_backward
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair
from tests.train.gloo_ranks import on_two_gloo_ranks

SETTINGS = {
    "width": 32,
    "layers": 2,
    "heads": 2,
    "vision": "vit",
    "image_size": 32,
    "vit_patch": 16,
}


CASES = {
    # name: (L_d weight alpha, InfoNCE weight, a separate retrieval batch, GradCache chunk)
    "sugar-infonce-one-batch": (1.0, 1.0, False, 0),
    "sugar-infonce-retrieval-batch": (1.0, 1.0, True, 0),
    "sugar": (1.0, 0.0, True, 0),
    "cafe-style": (0.0, 1.0, True, 0),
    "generative-only": (0.0, 0.0, False, 0),
    "sugar-infonce-grad-cache": (1.0, 1.0, True, 2),
}


def _setup(
    world_root: Path, separate: bool, alpha: float = 1.0, contrastive: float = 1.0
) -> tuple[TinyMLLM, SugarObjective, list, list | None]:
    """The model, the objective, the generative micro-batch and (``separate``) a retrieval
    micro-batch of 4 caption pairs and 2 story pairs (sugar.train.retrieval)."""
    from tests.train.fake_teacher import FakeTeacher

    stories = read_samples(world_root / "story" / "train.jsonl", world_root)[:2]
    captions = read_samples(world_root / "caption" / "train.jsonl", world_root)[:4]
    retrieval = None
    if separate:
        samples = list(captions)
        retrieval = [view for source in captions + stories for view in retrieval_pair(source)]
    else:  # captions as they are (their caption is L_g's target) and 2 split pairs
        samples = stories + captions[:2] + apply_views(captions, {"split": 1.0}, seed=0, step=0)
    texts = [s.text for x in stories + captions for s in x.segments if s.text]
    tokenizer = Tokenizer.train(texts, 300)
    torch.manual_seed(0)
    model = TinyMLLM(tokenizer, **SETTINGS)  # type: ignore[arg-type]
    options = StructureOptions(
        gak_normalisation="cosine", projector_dim=8, prefixes_per_sample=2,
        same_sample_target="kernel", predicted_kernel="learned",
    )  # fmt: skip
    objective = SugarObjective(
        model.hidden_size, LossWeights(alpha=alpha, contrastive=contrastive), options, delta=0.9,
        teacher=FakeTeacher(),
    )  # fmt: skip
    return model, objective, samples, retrieval


def _gradients(model: TinyMLLM, objective: SugarObjective) -> dict[str, torch.Tensor]:
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    return {n: p.grad.clone() for n, p in named if p.requires_grad and p.grad is not None}


def _run(
    world_root: Path, case: str, shard: Shard | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the losses, the parameter gradients) of ``case`` on ``shard`` (None: one process, the
    objective's own forward and backward)."""
    alpha, contrastive, separate, chunk = CASES[case]
    model, objective, samples, retrieval = _setup(world_root, separate, alpha, contrastive)
    generator = torch.Generator().manual_seed(5)
    if shard is None:
        parts = objective(model, samples, world_root, generator, None, retrieval)
        parts["loss"].backward()
    elif chunk:
        parallel = DataParallel(model, objective, shard)
        parts = cached_forward_backward(
            parallel, samples, retrieval or [], world_root, generator, shard, chunk
        )
    else:
        parallel = DataParallel(model, objective, shard)
        parts = parallel.forward_backward(
            lambda model, objective: objective(
                model, samples, world_root, generator, shard, retrieval
            )
        )
    names = ("loss", "lm_loss", "structure_loss", "contrastive_loss")
    losses = {name: parts[name].detach() for name in names if name in parts}
    assert float(losses["lm_loss"]) > 0, case  # L_g has targets in every case: it is compared
    return losses, _gradients(model, objective)


def _on_rank(rank: int, world_root: str) -> dict[str, object]:
    return {case: _run(Path(world_root), case, Shard(rank, 2)) for case in CASES}


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(loop_world: Path, tmp_path: Path) -> None:
    double = on_two_gloo_ranks(_on_rank, str(loop_world), tmp_path=tmp_path)
    for case in CASES:
        losses, grads = double[case]
        single_losses, single = _run(loop_world, case, None)
        assert losses.keys() == single_losses.keys(), case
        for name, value in single_losses.items():
            label = f"{case} {name}"
            torch.testing.assert_close(
                losses[name], value, msg=lambda m, label=label: f"{label}: {m}"
            )
        assert grads.keys() == single.keys(), case
        for name, grad in single.items():
            # float32 sums over two ranks run in another order: allow last-bit differences at
            # the gradient's own scale (a wrong row or a doubled gradient is off by O(1) of it)
            scale = float(grad.abs().max())
            torch.testing.assert_close(
                grads[name], grad, atol=1e-5 * scale + 1e-8, rtol=1e-5,
                msg=lambda m, label=f"{case} {name}": f"{label}: {m}",
            )  # fmt: skip
        alpha, contrastive, _, _ = CASES[case]
        after_gather = {"objective.log_bandwidth"} if alpha else set()
        after_gather |= {"objective.logit_scale"} if contrastive else set()
        assert after_gather <= single.keys(), case
        if alpha or contrastive:
            assert any(n.startswith("objective.projector") for n in single), case
        else:
            assert not any(n.startswith("objective") for n in single), case


def test_ddp_makes_sparse_embeddings_dense_where_the_backend_cannot_all_reduce_them() -> None:
    """NCCL refuses to all-reduce a sparse gradient (``SPARSE_ALL_REDUCE``), which the MiniLM
    word table gives; torch's ``fake`` backend stands in for it here (no GPU): ``DataParallel``
    makes the table dense before DDP wraps it. gloo keeps it sparse
    (``test_parallel_minilm.py``), and FSDP2 makes it dense on any backend."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        model = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 1))
        objective = torch.nn.Linear(1, 1)
        assert dist.get_backend() not in SPARSE_ALL_REDUCE
        parallel = DataParallel(model, objective, Shard(0, 2))
        assert isinstance(parallel.wrapped, torch.nn.parallel.DistributedDataParallel)
        assert not model[0].sparse
    finally:
        dist.destroy_process_group()
