"""The training loop: losses logged, checkpoints as documented, exact resume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from sugar.models.bundle import load_bundle
from sugar.train.checkpoint import latest_checkpoint, load_checkpoint
from sugar.train.loop import train
from sugar.train.run import batch_indices, lr_multiplier
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher


def _train_losses(history: list[dict]) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_a_run_writes_the_documented_files(loop_world: Path, tmp_path: Path) -> None:
    result = train(tiny_config(loop_world, tmp_path / "run"), teacher=FakeTeacher(), progress=False)
    run = result.run_dir
    for name in ("config.yaml", "manifest.json", "target_stats.json", "log.jsonl"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest", "step-000003", "step-000006",
    ]  # fmt: skip
    stats = json.loads((run / "target_stats.json").read_text())
    assert stats["delta"] > 0 and stats["delta_source"] == "auto"
    assert f"delta: {stats['delta']}" in (run / "config.yaml").read_text()
    bundle = load_bundle(run / "model")
    assert set(bundle.extras) == {"projector"}  # trained by L_d (alpha > 0)
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3, 4, 5, 6]
    assert {"lm_loss", "structure_loss", "structure_mse", "grad_norm", "lr"} <= set(lines[0])
    assert any("val_t2i_r1" in x for x in lines)
    assert result.best is not None and (result.best / "model.json").is_file()


def test_resume_continues_exactly(loop_world: Path, tmp_path: Path) -> None:
    full = train(tiny_config(loop_world, tmp_path / "a"), teacher=FakeTeacher(), progress=False)
    cfg = tiny_config(loop_world, tmp_path / "b")
    first = train(cfg, teacher=FakeTeacher(), progress=False, stop_after=3)
    assert first.step == 3 and not (tmp_path / "b" / "model").exists()
    second = train(cfg, resume=True, teacher=FakeTeacher(), progress=False)
    expected, got = _train_losses(full.history), _train_losses(second.history)
    assert sorted(got) == [4, 5, 6]
    for step in got:
        assert got[step] == pytest.approx(expected[step], abs=1e-6)
    a, b = load_bundle(tmp_path / "a" / "model"), load_bundle(tmp_path / "b" / "model")
    for name, tensor in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[name], tensor, atol=1e-6, rtol=0)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if "loss" in x] == [1, 2, 3, 4, 5, 6]


def test_a_paused_run_has_a_checkpoint_there_and_resumes_exactly(
    loop_world: Path, tmp_path: Path
) -> None:
    full = train(tiny_config(loop_world, tmp_path / "a"), teacher=FakeTeacher(), progress=False)
    cfg = tiny_config(loop_world, tmp_path / "b")  # checkpoints every 3 steps: 2 is not one
    first = train(cfg, teacher=FakeTeacher(), progress=False, pause_at=2)
    found = latest_checkpoint(tmp_path / "b")
    assert first.step == 2 and found is not None and found.name == "step-000002"
    assert not (tmp_path / "b" / "model").exists()
    second = train(cfg, resume=True, teacher=FakeTeacher(), progress=False)
    expected, got = _train_losses(full.history), _train_losses(second.history)
    assert sorted(got) == [3, 4, 5, 6]
    for step in got:
        assert got[step] == pytest.approx(expected[step], abs=1e-6)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    shares = [x["loss_share"] for x in log if "loss_share" in x]
    # one record per process, each over that process's own steps: L_d ran in every one
    assert shares == [{"structure_loss": 1.0}, {"structure_loss": 1.0}]


def test_the_demo_trains_a_run_to_its_pause_once_then_resumes_it(
    loop_world: Path, tmp_path: Path
) -> None:
    from sugar.config import to_dict
    from sugar.recipes.jobs import paused_at, train_on_workers, train_until

    run = tmp_path / "j"
    cfg = to_dict(tiny_config(loop_world, run, "structure.alpha=0", "train.select_metric=val_loss"))
    assert paused_at(run) == 0
    train_until(cfg, 2)
    log = (run / "log.jsonl").read_text()
    assert paused_at(run) == 2
    train_until(cfg, 2)  # already there: a second demo does not train it again
    assert (run / "log.jsonl").read_text() == log
    train_on_workers(cfg, 1, resume=True)
    assert paused_at(run) == 6 and (run / "model" / "model.json").is_file()
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in records if "loss" in x] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("pause_at", [0, 6, 7])
def test_a_pause_outside_the_run_is_refused(
    loop_world: Path, tmp_path: Path, pause_at: int
) -> None:
    cfg = tiny_config(loop_world, tmp_path / "p")
    with pytest.raises(ValueError, match=f"pause_at={pause_at}: must lie strictly between"):
        train(cfg, teacher=FakeTeacher(), progress=False, pause_at=pause_at)


def test_dropout_masks_are_a_function_of_seed_step_micro_batch_and_rank() -> None:
    from sugar.train.run import seed_step

    drop = torch.nn.Dropout(0.5)

    def mask(*where: int) -> torch.Tensor:
        seed_step(*where)
        return drop(torch.ones(64)) > 0

    first = mask(0, 3, 0, 0)
    torch.rand(100)  # whatever drew before, the step draws the same
    assert torch.equal(mask(0, 3, 0, 0), first)
    for other in [(0, 3, 0, 1), (0, 3, 1, 0), (0, 4, 0, 0), (1, 3, 0, 0)]:
        assert not torch.equal(mask(*other), first), other  # 2^-64 by chance


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(loop_world: Path, tmp_path: Path) -> None:
    cfg = tiny_config(loop_world, tmp_path / "r", "train.steps=3")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, resume=True, teacher=FakeTeacher(), progress=False)
    train(cfg, teacher=FakeTeacher(), progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, teacher=FakeTeacher(), progress=False)


def test_an_unknown_select_metric_is_named(loop_world: Path, tmp_path: Path) -> None:
    cfg = tiny_config(loop_world, tmp_path / "m", "train.select_metric=val_nope")
    with pytest.raises(ValueError, match="val_nope"):
        train(cfg, teacher=FakeTeacher(), progress=False)


def test_alpha_zero_never_calls_the_teacher(loop_world: Path, tmp_path: Path) -> None:
    FakeTeacher.calls = 0
    cfg = tiny_config(
        loop_world, tmp_path / "g", "structure.alpha=0", "train.select_metric=val_loss"
    )
    result = train(cfg, teacher=FakeTeacher(), progress=False)
    assert FakeTeacher.calls == 0
    assert "structure_loss" not in result.history[0]
    assert load_bundle(result.bundle).extras == {}  # no trained projector: embeddings are n/a


_KILLED_RUN = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher
from sugar.train.loop import train
from pathlib import Path
cfg = tiny_config(Path({world!r}), Path({run!r}), "train.steps=400", "train.checkpoint_every=2",
                  "train.eval_every=0")
train(cfg, teacher=FakeTeacher(), progress=False, resume={resume})
"""


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_trajectory(loop_world: Path, tmp_path: Path) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    run = tmp_path / "killed"
    script = _KILLED_RUN.format(repo=repo, world=str(loop_world), run=str(run), resume=False)
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        checkpoint = latest_checkpoint(run) if (run / "checkpoints").exists() else None
        if checkpoint is not None and load_checkpoint(checkpoint)["step"] >= 6:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(latest_checkpoint(run))["step"]  # type: ignore[arg-type]
    assert 6 <= killed_at < 400
    resumed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN.format(repo=repo, world=str(loop_world),
                                                   run=str(run), resume=True)],
        check=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0
    reference = tiny_config(
        loop_world, tmp_path / "ref", "train.steps=400", "train.checkpoint_every=2",
        "train.eval_every=0",
    )  # fmt: skip
    full = train(reference, teacher=FakeTeacher(), progress=False)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    got = {x["step"]: x["loss"] for x in log if "loss" in x}
    expected = _train_losses(full.history)
    assert sorted(got) == list(range(1, 401))
    for step in range(killed_at + 1, 401):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


def test_batch_indices_cover_each_epoch_once() -> None:
    first_epoch = batch_indices(10, 10, seed=1, position=0)
    assert sorted(first_epoch) == list(range(10))
    assert batch_indices(10, 4, seed=1, position=8)[:2] == first_epoch[8:]
    assert batch_indices(10, 4, seed=1, position=0) == first_epoch[:4]


def test_schedule_warms_up_then_decays_to_zero() -> None:
    values = [lr_multiplier(step, 10, 2) for step in range(11)]
    assert values[0] == 0.5 and values[1] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(values[1:]))
    assert values[10] == pytest.approx(0.0)


def test_adamw_is_fused_only_over_plain_floating_parameters() -> None:
    from sugar.train.loop import fused_adam

    plain = [{"params": [torch.nn.Parameter(torch.zeros(3)), torch.zeros(2, 2)]}]
    assert fused_adam(plain) is True
    assert fused_adam([*plain, {"params": [torch.zeros(2, dtype=torch.long)]}]) is None

    class Sharded(torch.Tensor):  # a tensor subclass, as FSDP2's DTensor is
        pass

    assert fused_adam([{"params": [torch.zeros(2).as_subclass(Sharded)]}]) is None


def test_split_views_are_two_samples_of_one_group() -> None:
    from sugar.data.schema import Sample, Segment
    from sugar.data.views import apply_views
    from sugar.train.objective import group_indices

    pair = Sample("c", [Segment.image_("a.png"), Segment.text_("A cat.", "target")])
    story = Sample("s", [Segment.text_("One."), Segment.image_("b.png")])
    out = apply_views([pair, story, pair], {"split": 1.0}, seed=0, step=0)
    assert [s.id for s in out] == ["c#image_only", "c#caption_only", "s"]  # cut back to 3
    assert group_indices(out).tolist() == [0, 0, 1]


def test_cafe_style_trains_the_projector_with_infonce_and_no_teacher(
    loop_world: Path, tmp_path: Path
) -> None:
    FakeTeacher.calls = 0
    cfg = tiny_config(
        loop_world, tmp_path / "cafe", "structure.alpha=0", "contrastive.weight=1.0",
        "data.view_weights={split: 1.0, as_is: 1.0}",
    )  # fmt: skip
    result = train(cfg, teacher=FakeTeacher(), progress=False)
    assert FakeTeacher.calls == 0
    steps = [h for h in result.history if "loss" in h]
    assert any("contrastive_loss" in h for h in steps)
    for h in steps:
        expected = h["lm_loss"] + h.get("contrastive_loss", 0.0)
        assert h["loss"] == pytest.approx(expected, rel=1e-6)
    assert set(load_bundle(result.bundle).extras) == {"projector"}


def test_hard_negatives_enter_the_image_to_text_candidates(loop_world: Path) -> None:
    from sugar.data.jsonl import read_samples
    from sugar.data.views import apply_views
    from sugar.losses import LossWeights, StructureOptions
    from sugar.models.tiny import TinyMLLM
    from sugar.models.tokenizer import Tokenizer
    from sugar.train.objective import SugarObjective

    captions = read_samples(loop_world / "caption" / "train.jsonl", loop_world)[:4]
    assert all(c.meta["negatives"] for c in captions)
    samples = apply_views(captions, {"split": 1.0}, seed=0, step=0) + apply_views(
        captions[2:], {"split": 1.0}, seed=0, step=0
    )
    tokenizer = Tokenizer.train([s.segments[1].text or "" for s in captions], 300)
    model = TinyMLLM(tokenizer, width=32, layers=2, heads=2, feature_cache=None).eval()
    objective = SugarObjective(
        32, LossWeights(alpha=0.0, contrastive=1.0), StructureOptions(projector_dim=8)
    )
    with torch.no_grad():
        plain = objective(model, samples, loop_world)
        objective.hard_negatives = 2
        harder = objective(model, samples, loop_world)
    # more candidates in the image->text softmax: that direction's loss can only grow
    assert harder["image_to_text_loss"] > plain["image_to_text_loss"]
    assert torch.equal(harder["text_to_image_loss"], plain["text_to_image_loss"])


def test_run_device_is_validated_and_a_missing_cuda_is_named() -> None:
    from sugar.config import ConfigError, load_config
    from sugar.train.run import resolve_device

    with pytest.raises(ConfigError, match="device"):
        load_config(None, ["run.device=gpu"])
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"run.device='cuda:{count}'.*{count} CUDA devices"):
        resolve_device(f"cuda:{count}")


def test_upsample_repeats_a_files_samples_per_epoch(loop_world: Path) -> None:
    from sugar.config import ConfigError, load_config
    from sugar.train.run import read_files

    files = ["caption/train.jsonl", "story/train.jsonl"]
    plain = read_files(loop_world, files)
    mixed = read_files(loop_world, files, {"caption/train.jsonl": 3})
    captions = read_files(loop_world, files[:1])
    assert len(mixed) == len(plain) + 2 * len(captions)
    assert [s.id for s in mixed].count(captions[0].id) == 3
    with pytest.raises(ConfigError, match="upsample"):
        load_config(None, ["data.upsample={vqa/val.jsonl: 2}"])
    with pytest.raises(ConfigError, match="upsample"):
        load_config(None, ["data.upsample={caption/train.jsonl: 0}"])


def test_validation_keeps_the_first_samples_and_names_a_file_it_never_reaches(
    loop_world: Path,
) -> None:
    from sugar.train.run import read_files, read_validation

    files = ["caption/val.jsonl", "vqa/val.jsonl"]
    captions, questions = (len(read_files(loop_world, [f])) for f in files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching the VQA file's first sample: no warning
        both = read_validation(loop_world, files, captions + 1)
    assert [s.task for s in both] == ["caption"] * captions + ["vqa"]
    with pytest.warns(UserWarning, match=rf"'vqa/val.jsonl'.*eval_samples >= {captions + 1}"):
        only = read_validation(loop_world, files, captions)
    assert [s.id for s in only] == [s.id for s in both[:captions]]
    assert len(read_validation(loop_world, files, captions + questions + 5)) == captions + questions
