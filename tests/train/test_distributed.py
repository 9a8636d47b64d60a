"""Two gloo processes give the same L_d and the same parameter gradients as one process over
the same global batch (METHOD.md section 5), including the parameters used after the gather
(a learned bandwidth, the InfoNCE temperature)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sugar.data.jsonl import read_samples
from sugar.data.views import apply_views
from sugar.losses import LossWeights, StructureOptions
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.train.distributed import DataParallel, Shard
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair

SETTINGS = {
    "width": 32,
    "layers": 2,
    "heads": 2,
    "vision": "vit",
    "image_size": 32,
    "vit_patch": 16,
}


def _setup(world_root: Path, separate: bool) -> tuple[TinyMLLM, SugarObjective, list, list | None]:
    """The model, the objective, the generative micro-batch and (``separate``) a retrieval
    micro-batch of 4 caption pairs and 2 story pairs (sugar.train.retrieval)."""
    from tests.train.fake_teacher import FakeTeacher

    stories = read_samples(world_root / "story" / "train.jsonl", world_root)[:2]
    captions = read_samples(world_root / "caption" / "train.jsonl", world_root)[:4]
    retrieval = None
    if separate:
        samples = list(captions)
        retrieval = [view for source in captions + stories for view in retrieval_pair(source)]
    else:
        samples = stories + apply_views(captions, {"split": 1.0}, seed=0, step=0)  # 2 pairs
    texts = [s.text for x in stories + captions for s in x.segments if s.text]
    tokenizer = Tokenizer.train(texts, 300)
    torch.manual_seed(0)
    model = TinyMLLM(tokenizer, **SETTINGS)  # type: ignore[arg-type]
    options = StructureOptions(
        gak_normalisation="cosine", projector_dim=8, prefixes_per_sample=2,
        same_sample_target="kernel", predicted_kernel="learned",
    )  # fmt: skip
    objective = SugarObjective(
        model.hidden_size, LossWeights(alpha=1.0, contrastive=1.0), options, delta=0.9,
        teacher=FakeTeacher(),
    )  # fmt: skip
    return model, objective, samples, retrieval


def _gradients(model: TinyMLLM, objective: SugarObjective) -> dict[str, torch.Tensor]:
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    return {n: p.grad.clone() for n, p in named if p.requires_grad and p.grad is not None}


def _worker(rank: int, world_root: str, init_file: str, out: str, separate: bool) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model, objective, samples, retrieval = _setup(Path(world_root), separate)
    generator = torch.Generator().manual_seed(5)
    shard = Shard(rank, 2)
    parallel = DataParallel(model, objective, shard)
    parts = parallel.forward_backward(
        lambda model, objective: objective(model, samples, world_root, generator, shard, retrieval)
    )
    if rank == 0:
        torch.save(
            {
                "structure_loss": parts["structure_loss"].detach(),
                "lm_loss": parts["lm_loss"].detach(),
                "contrastive_loss": parts["contrastive_loss"].detach(),
                "grads": _gradients(model, objective),
            },
            out,
        )
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("separate", [False, True], ids=["one-batch", "retrieval-batch"])
def test_two_gloo_processes_equal_one_process(
    loop_world: Path, tmp_path: Path, separate: bool
) -> None:
    model, objective, samples, retrieval = _setup(loop_world, separate)
    parts = objective(model, samples, loop_world, torch.Generator().manual_seed(5), None, retrieval)
    parts["loss"].backward()
    single = _gradients(model, objective)
    out = tmp_path / "rank0.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    spawned = (str(loop_world), str(tmp_path / "init"), str(out), separate)
    mp.spawn(_worker, args=spawned, nprocs=2, join=True)
    double = torch.load(out)
    torch.testing.assert_close(double["structure_loss"], parts["structure_loss"].detach())
    torch.testing.assert_close(double["lm_loss"], parts["lm_loss"].detach())
    torch.testing.assert_close(double["contrastive_loss"], parts["contrastive_loss"].detach())
    assert double["grads"].keys() == single.keys()
    for name, grad in single.items():
        # float32 sums over two ranks run in another order: allow last-bit differences at the
        # gradient's own scale (a wrong row or a doubled gradient is off by O(1) of it)
        scale = float(grad.abs().max())
        torch.testing.assert_close(
            double["grads"][name], grad, atol=1e-5 * scale + 1e-8, rtol=1e-5,
            msg=lambda m, name=name: f"{name}: {m}",
        )  # fmt: skip
    assert any(g.abs().sum() > 0 for n, g in single.items() if n.startswith("objective"))
    assert {"objective.log_bandwidth", "objective.logit_scale"} <= single.keys()
