"""The control branch: bit-identical to the base at initialisation and without instruction
(tiny, MiniLM and Hugging Face backbones), steering once its joins are non-zero, frozen
weights untouched, hooks gone after use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sugar.control.branch import ControlBranch, JoinKind, joined
from sugar.control.embed import embed_instructed, instructed_vectors, read_instructions
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.embed import embed_vectors
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector
from tests.control.conftest import ControlWorld


def queries(world: ControlWorld) -> tuple[list[Sample], list[str]]:
    samples = read_samples(world.root / "instructed" / "test.jsonl", world.root)[:6]
    return samples, [s.meta["instruction"] for s in samples]


def perturbed(branch: ControlBranch) -> ControlBranch:
    torch.manual_seed(1)
    for projection in branch.zero:
        torch.nn.init.normal_(projection.weight, std=0.5)
    return branch


def check_identity_then_steering(
    model: MLLM,
    samples: list[Sample],
    instructions: list[str],
    root: Path,
    heads: int,
    join: JoinKind = "add",
) -> None:
    torch.manual_seed(0)
    projector = RetrievalProjector(model.hidden_size, 16).eval()
    # with output experts, as the shipped config has them (zero too at initialisation)
    branch = ControlBranch(model.hidden_size, joins=2, layers=1, heads=heads, join=join,
                           experts=2, dim=16)  # fmt: skip
    base = embed_vectors(model, projector, samples, root)
    steered = embed_instructed(model, projector, branch, samples, instructions, root)
    assert torch.equal(base, steered)  # zero joins and experts: bit for bit
    perturbed(branch)
    moved = embed_instructed(model, projector, branch, samples, instructions, root)
    assert (moved - base).abs().max() > 1e-3
    # the hooks exist only inside joined(): the plain embedding is the base one again
    assert torch.equal(embed_vectors(model, projector, samples, root), base)


@pytest.mark.parametrize("join", ["add", "film"])
def test_tiny_backbone_identity_and_steering(control_world: ControlWorld, join: JoinKind) -> None:
    samples, instructions = queries(control_world)
    check_identity_then_steering(control_world.model, samples, instructions,
                                 control_world.root, heads=2, join=join)  # fmt: skip


def test_film_join_scales_and_shifts_each_position() -> None:
    layer = torch.nn.Linear(3, 3)
    x = torch.randn(2, 4, 3)
    gain, shift = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    with joined([layer], torch.cat([gain, shift], dim=-1), "film"):
        steered = layer(x)
    plain = layer(x)
    torch.testing.assert_close(steered, plain * (1 + gain[0][:, None]) + shift[0][:, None])
    with pytest.raises(ValueError, match="join='mul'"), joined([layer], shift, "mul"):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="join='mul'"):
        ControlBranch(32, heads=2, join="mul")  # type: ignore[arg-type]


@pytest.mark.slow
def test_minilm_backbone_identity_and_steering(control_world: ControlWorld) -> None:
    from sugar.models.minilm import MiniLMMLLM

    options = {"image_size": 64, "grid": 1, "dropout": 0.0, "max_positions": 128,
               "feature_cache": None}  # fmt: skip
    model = MiniLMMLLM.build(["find a red circle."], options, {}).eval()
    samples, instructions = queries(control_world)
    check_identity_then_steering(model, samples, instructions, control_world.root, heads=4)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hf-llava", "hf-qwen2-vl"])
def test_hf_backbones_identity_and_steering(family: str, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from sugar.models.base import backbone_class
    from tests.models.hf_checkpoints import llava_checkpoint, qwen2vl_checkpoint, write_images

    write_images(tmp_path)
    (llava_checkpoint if family == "hf-llava" else qwen2vl_checkpoint)(tmp_path / family)
    model = backbone_class(family).create(str(tmp_path / family), lora_rank=4)  # type: ignore[attr-defined]
    model.eval()
    samples = [
        Sample("q0", [Segment.image_("img/wide.png"), Segment.text_("a red circle .")]),
        Sample("q1", [Segment.image_("img/big.png")]),
    ]
    check_identity_then_steering(model, samples, ["what shape ?", "what colour ?"], tmp_path,
                                 heads=2)  # fmt: skip


def test_gradient_reaches_only_the_branch(control_world: ControlWorld) -> None:
    model, root = control_world.model, control_world.root
    model.requires_grad_(False)
    samples, instructions = queries(control_world)
    projector = RetrievalProjector(model.hidden_size, 16).eval().requires_grad_(False)
    torch.manual_seed(0)
    branch = ControlBranch(model.hidden_size, joins=2, layers=1, heads=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vectors = instructed_vectors(model, projector, branch, samples, instructions, root)
    vectors.sum().backward()
    # ControlNet's zero convolution: the joins get a gradient at once, the branch behind
    # them only after the joins move away from zero
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.zero.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in branch.encoder.parameters())
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_joined_removes_its_hooks_after_an_error(control_world: ControlWorld) -> None:
    layers = control_world.model.decoder_layers()
    with pytest.raises(RuntimeError), joined(layers, torch.ones(2, 1, 32)):
        raise RuntimeError("boom")
    assert all(not layer._forward_hooks for layer in layers)
    with (
        pytest.raises(ValueError, match="3 joins > the backbone's 2 layers"),
        joined(layers, torch.zeros(3, 1, 32)),
    ):
        pass


def test_bad_shapes_and_instructions_are_named(control_world: ControlWorld) -> None:
    with pytest.raises(ValueError, match="heads=3 does not divide width=32"):
        ControlBranch(32, heads=3)
    model, root = control_world.model, control_world.root
    samples, _ = queries(control_world)
    branch = ControlBranch(32, joins=2, layers=1, heads=2)
    projector = RetrievalProjector(32, 16)
    with pytest.raises(ValueError, match=r"instructions\[1\] = ''"):
        embed_instructed(model, projector, branch, samples[:2], ["find it", ""], root)


@pytest.mark.parametrize("join", ["add", "film"])
def test_cached_readings_give_the_same_vectors_and_gradients(
    control_world: ControlWorld, join: JoinKind
) -> None:
    """Training reads each [instruction, query] once (read_instructions) and reuses it in
    padded batches; vectors and the branch's gradients must match the naive reference, each
    query read and embedded alone (no padding anywhere), in any batch order."""
    samples, instructions = queries(control_world)
    model, root = control_world.model, control_world.root
    torch.manual_seed(0)
    projector = RetrievalProjector(model.hidden_size, 16).eval()
    branch = perturbed(ControlBranch(model.hidden_size, joins=2, layers=1, heads=2, join=join))
    readings = read_instructions(model, samples, instructions, root, batch_size=4)
    assert [r.dim() for r in readings] == [2] * len(samples)
    assert len({len(r) for r in readings}) > 1  # lengths differ: padding is exercised
    weights = torch.arange(1.0, 17.0)

    def gradient_of(vectors: torch.Tensor) -> torch.Tensor:
        branch.zero_grad()
        (vectors * weights).sum().backward()
        grad = branch.zero[0].weight.grad
        assert grad is not None
        return grad.clone()

    def alone(order: list[int]) -> torch.Tensor:  # (B, P), each query read and embedded alone
        return torch.cat([instructed_vectors(model, projector, branch, [samples[i]],
                                             [instructions[i]], root) for i in order])  # fmt: skip

    reference = alone(list(range(len(samples)))).detach()
    assert (reference - base_vectors(model, projector, samples, root)).abs().max() > 1e-3
    for order in (list(range(len(samples))), [3, 0, 5, 1, 4, 2]):
        batch = instructed_vectors(
            model, projector, branch, [samples[i] for i in order],
            [instructions[i] for i in order], root, readings=[readings[i] for i in order],
        )  # fmt: skip
        torch.testing.assert_close(batch.detach(), reference[order], rtol=1e-5, atol=1e-6)
        grad = gradient_of(batch)
        torch.testing.assert_close(grad, gradient_of(alone(order)), rtol=1e-4, atol=1e-6)
    fresh = embed_instructed(model, projector, branch, samples, instructions, root, batch_size=4)
    cached = embed_instructed(model, projector, branch, samples, instructions, root,
                              batch_size=4, readings=readings)  # fmt: skip
    torch.testing.assert_close(fresh, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached, reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="5 readings for 6 queries"):
        embed_instructed(model, projector, branch, samples, instructions, root,
                         readings=readings[:5])  # fmt: skip


def base_vectors(
    model: MLLM, projector: RetrievalProjector, samples: list[Sample], root: Path
) -> torch.Tensor:
    return embed_vectors(model, projector, samples, root)
