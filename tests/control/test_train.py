"""sugar train-control through the CLI: rounds with mined negatives, the bundle it writes (the
base's weights untouched, the branch carried), resume at the same step with the same result,
and the instructed task and API over that bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sugar
from sugar.control.embed import embed_instructed
from sugar.data.jsonl import read_samples
from sugar.embed import embed_vectors
from sugar.eval.tasks import load_eval_model, run_tasks
from tests.control.conftest import ControlWorld


@pytest.fixture(scope="module")
def trained(control_world: ControlWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("control-run") / "run"
    result = control_world.train_control(run, "lr=0.01")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n") :])
    assert summary["step"] == 4 and "mean_r1" in summary["validation"]
    return run


def test_rounds_mine_and_the_base_stays_frozen(trained: Path, control_world: ControlWorld) -> None:
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    mining = [r["mining"] for r in log if "mining" in r]
    assert len(mining) == 1 and mining[0]["mined"] > 0  # round 2 only
    assert sum("round" in r and "validation" in r for r in log) == 2
    base = load_file(str(control_world.bundle / "backbone.safetensors"))
    after = load_file(str(trained / "model" / "backbone.safetensors"))
    assert base.keys() == after.keys() and all(torch.equal(base[k], after[k]) for k in base)
    extras = load_file(str(trained / "model" / "extras.safetensors"))
    assert any(k.startswith("control.zero.") for k in extras)
    assert any(extras[k].abs().sum() > 0 for k in extras if k.startswith("control.zero."))


def test_the_bundle_holds_the_round_best_on_validation(
    trained: Path, control_world: ControlWorld, tmp_path: Path
) -> None:
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    scores = [r["validation"]["mean_r1"] for r in log if "round" in r and "validation" in r]
    best = max(range(len(scores)), key=lambda i: (scores[i], i)) + 1  # a tie: the later round
    (selected,) = [r for r in log if "selected_round" in r]
    assert selected["selected_round"] == best and selected["validation"]["mean_r1"] == max(scores)
    extras = load_file(str(trained / "model" / "extras.safetensors"))
    chosen = load_file(str(trained / "rounds" / f"round-{best:02d}" / "tensors.safetensors"))
    assert chosen and all(torch.equal(extras[f"control.{k}"], v) for k, v in chosen.items())
    last = tmp_path / "last"
    result = control_world.train_control(last, "lr=0.01", "select_round=last")
    assert result.exit_code == 0, result.output
    extras = load_file(str(last / "model" / "extras.safetensors"))
    branch = load_file(str(last / "rounds" / "round-02" / "tensors.safetensors"))
    assert all(torch.equal(extras[f"control.{k}"], v) for k, v in branch.items())


def test_resume_continues_at_the_same_step_with_the_same_result(
    trained: Path, control_world: ControlWorld, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    shutil.rmtree(copy / "model")
    (copy / "checkpoints" / "latest").write_text("step-000003\n")  # killed after step 3
    result = control_world.train_control(copy, "lr=0.01", "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed at step 3 (round 2)" in result.output
    first = load_file(str(trained / "model" / "extras.safetensors"))
    second = load_file(str(copy / "model" / "extras.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first)
    again = control_world.train_control(copy, "lr=0.01")
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_instructed_task_and_api_use_the_branch(trained: Path, control_world: ControlWorld) -> None:
    root = control_world.root
    plain = run_tasks(load_eval_model(control_world.bundle), root, ["instructed"])["instructed"]
    assert plain["control_mean_r1"] == "n/a" and isinstance(plain["text_mean_r1"], float)
    evaluated = load_eval_model(trained / "model")
    results = run_tasks(evaluated, root, ["instructed", "caption_retrieval"])
    steered = results["instructed"]
    for key in ("base_mean_r1", "text_mean_r1", "base_heldout_ndcg10"):
        assert steered[key] == plain[key]  # the same frozen model without the branch
    assert isinstance(steered["control_mean_r1"], float)
    assert "control_vs_text_mean_r1_ci_low" in steered
    base_results = run_tasks(load_eval_model(control_world.bundle), root, ["caption_retrieval"])
    assert base_results["caption_retrieval"] == results["caption_retrieval"]

    model = sugar.load(trained / "model")
    base = sugar.load(control_world.bundle)
    queries = read_samples(root / "instructed" / "test.jsonl", root)[:3]
    text = "Find images with the same shapes as this one."
    vectors = model.encode_query(queries, root=root, instruction=text, convert_to_tensor=True)
    assert evaluated.control is not None
    expected = embed_instructed(evaluated.backbone, model.projector, evaluated.control,
                                queries, [text] * 3, root)  # fmt: skip
    assert torch.equal(vectors, expected)
    plain_vectors = model.encode_query(queries, root=root, convert_to_tensor=True)
    assert torch.equal(plain_vectors, base.encode_query(queries, root=root, convert_to_tensor=True))
    assert torch.equal(plain_vectors, embed_vectors(base.backbone, base.projector, queries, root))


HOLD = """
import sys, time
from pathlib import Path
from sugar.locks import holding
directory = Path(sys.argv[1])
with holding(directory, 0, "run directory", lock_file=directory / ".sugar-lock"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_the_run_directory_is_claimed_and_locked_like_sugar_trains(
    trained: Path, control_world: ControlWorld, tmp_path: Path
) -> None:
    import subprocess
    import sys

    run = control_world.train_control
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    refused = run(foreign)
    assert refused.exit_code == 2 and "not written by sugar" in refused.output
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    failed = run(tmp_path / "new", "base=" + str(tmp_path / "no-bundle"))
    assert failed.exit_code == 2 and not (tmp_path / "new").exists()

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / "checkpoints" / "latest").write_text("../../../elsewhere\n")
    escaped = run(copy, "--resume")
    assert escaped.exit_code == 2 and "may only name a step-NNNNNN" in escaped.output
    (copy / "checkpoints" / "latest").write_text("step-000004\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(copy)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = run(copy, "--resume")
        assert busy.exit_code == 2
        assert "another sugar process is writing this run directory" in busy.output
    finally:
        holder.kill()
        holder.wait()
