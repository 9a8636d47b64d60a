"""The control branch's output experts: the map against a per-query loop, bit-identical to the
base at initialisation, steering once non-zero, ControlNet's zero-init gradient order, the
bundle's spec (with and without experts), bad settings named, and a CLI run that trains them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sugar.config import ConfigError
from sugar.control.branch import ControlBranch
from sugar.control.bundle import CONTROL, control_from_extras
from sugar.control.config import load_control_config
from sugar.control.embed import embed_instructed, instructed_vectors
from sugar.embed import embed_vectors
from sugar.eval.tasks import load_eval_model
from sugar.models.prefix import RetrievalProjector
from tests.control.conftest import ControlWorld
from tests.control.test_branch import queries


def perturbed_experts(branch: ControlBranch) -> ControlBranch:
    assert branch.experts is not None
    torch.manual_seed(2)
    with torch.no_grad():
        branch.experts.normal_(std=0.3)
    return branch


def test_steer_output_matches_a_per_query_loop() -> None:
    torch.manual_seed(0)
    branch = perturbed_experts(ControlBranch(8, joins=1, layers=1, heads=2, experts=3, dim=5))
    assert branch.route is not None and branch.experts is not None
    pooled, raw = torch.randn(4, 8), torch.randn(4, 5)
    got = branch.steer_output(pooled, raw)
    for b in range(4):
        weights = torch.softmax(branch.route(pooled[b]), dim=-1)
        want = raw[b].clone()
        for k in range(3):
            want = want + weights[k] * (raw[b] @ branch.experts[k])
        torch.testing.assert_close(got[b], want)
    plain = ControlBranch(8, joins=1, layers=1, heads=2)
    assert plain.steer_output(pooled, raw) is raw  # no experts: the projector's output as is


def test_identity_at_initialisation_then_steering(control_world: ControlWorld) -> None:
    model, root = control_world.model, control_world.root
    samples, instructions = queries(control_world)
    torch.manual_seed(0)
    projector = RetrievalProjector(model.hidden_size, 16).eval()
    branch = ControlBranch(model.hidden_size, joins=2, layers=1, heads=2, join="film",
                           experts=3, dim=16)  # fmt: skip
    base = embed_vectors(model, projector, samples, root)
    assert torch.equal(embed_instructed(model, projector, branch, samples, instructions, root),
                       base)  # zero joins, zero experts: bit for bit  # fmt: skip
    perturbed_experts(branch)  # the joins stay zero: only the final map moves the vectors
    moved = embed_instructed(model, projector, branch, samples, instructions, root)
    assert (moved - base).abs().max() > 1e-3
    torch.testing.assert_close(moved.norm(dim=-1), torch.ones(len(samples)))
    assert torch.equal(embed_vectors(model, projector, samples, root), base)


def test_experts_get_a_gradient_at_once_and_the_rest_after(control_world: ControlWorld) -> None:
    model, root = control_world.model, control_world.root
    model.requires_grad_(False)
    samples, instructions = queries(control_world)
    torch.manual_seed(0)
    projector = RetrievalProjector(model.hidden_size, 16).eval().requires_grad_(False)
    branch = ControlBranch(model.hidden_size, joins=2, layers=1, heads=2, experts=3, dim=16)
    assert branch.route is not None and branch.experts is not None
    vectors = instructed_vectors(model, projector, branch, samples, instructions, root)
    (vectors * torch.randn_like(vectors)).sum().backward()
    assert branch.experts.grad is not None and branch.experts.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in branch.route.parameters())
    assert all(p.grad is None for p in model.parameters())
    branch.zero_grad()
    perturbed_experts(branch)
    vectors = instructed_vectors(model, projector, branch, samples, instructions, root)
    (vectors * torch.randn_like(vectors)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.route.parameters())


def test_the_spec_rebuilds_the_branch_and_stays_old_without_experts() -> None:
    torch.manual_seed(0)
    branch = perturbed_experts(ControlBranch(8, joins=1, layers=1, heads=2, experts=2, dim=4))
    assert branch.spec["experts"] == 2 and branch.spec["dim"] == 4
    loaded = control_from_extras({CONTROL: branch.state_dict()}, {CONTROL: dict(branch.spec)}, "b")
    assert loaded is not None
    pooled, raw = torch.randn(3, 8), torch.randn(3, 4)
    torch.testing.assert_close(loaded.steer_output(pooled, raw), branch.steer_output(pooled, raw))
    # bundles written before the experts existed carry neither key and load as before
    plain = ControlBranch(8, joins=1, layers=1, heads=2)
    assert "experts" not in plain.spec and "dim" not in plain.spec
    assert set(plain.state_dict()) == {k for k in branch.state_dict()
                                       if not k.startswith(("route.", "experts"))}  # fmt: skip


def test_bad_expert_settings_are_named() -> None:
    with pytest.raises(ValueError, match="experts=2, dim=0"):
        ControlBranch(8, heads=2, experts=2)
    with pytest.raises(ValueError, match="experts=-1"):
        ControlBranch(8, heads=2, experts=-1, dim=4)
    with pytest.raises(ConfigError, match="output_experts"):
        load_control_config(None, ["base=b", "output_experts=-1"])


def test_a_run_with_experts_trains_them_and_its_bundle_uses_them(
    control_world: ControlWorld, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = control_world.train_control(run, "lr=0.01", "output_experts=2")
    assert result.exit_code == 0, result.output
    extras = load_file(str(run / "model" / "extras.safetensors"))
    assert extras["control.experts"].shape[0] == 2 and extras["control.experts"].abs().sum() > 0
    model = load_eval_model(run / "model")
    assert model.control is not None and model.control.experts is not None
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["selected_round"] >= 1
