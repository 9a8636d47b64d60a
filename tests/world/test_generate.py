"""Determinism, atomic output, planned counts, and option validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sugar.config import ConfigError, WorldConfig, load_config, to_dict
from sugar.data.world import TASKS, generate, generate_world, plan_counts
from tests.world.helpers import SMALL, World

TINY = {"train_per_task": 12, "val_per_task": 3, "test_per_task": 6, "image_size": 32}
_RUN_RECORD = ("created", "command", "git_commit", "versions", "torch_threads", "host")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path: Path) -> None:
    a = generate_world(tmp_path / "a", seed=0, **TINY)
    b = generate_world(tmp_path / "b", seed=0, **TINY)
    generate_world(tmp_path / "c", seed=1, **TINY)
    fa, fb, fc = (_files(tmp_path / n) for n in "abc")
    assert fa.keys() == fb.keys()
    different = [k for k in fa if k != "manifest.json" and fa[k] != fb[k]]
    assert different == []
    strip = [{k: v for k, v in m.items() if k not in _RUN_RECORD} for m in (a, b)]
    assert strip[0] == strip[1]
    assert fa["caption/train.jsonl"] != fc["caption/train.jsonl"]
    shared = [k for k in fa.keys() & fc.keys() if k.endswith(".png")]
    assert any(fa[k] != fc[k] for k in shared)


def test_an_interrupted_generation_leaves_the_old_world_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_world(tmp_path / "w", seed=0, **TINY)
    before = _files(tmp_path / "w")

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "build_needle", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_world(tmp_path / "w", seed=1, **TINY)
    with pytest.raises(KeyboardInterrupt):
        generate_world(tmp_path / "fresh", seed=1, **TINY)
    assert _files(tmp_path / "w") == before
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temporary left behind


def test_default_sizes_meet_the_minimum_counts() -> None:
    plan = plan_counts()
    for task in TASKS:
        assert plan["tasks"][task]["test"] >= 2000, task
    assert all(n >= 500 for n in plan["negatives_min"]["test"].values())
    assert all(n >= 500 for n in plan["pope_negatives"]["test"].values())


def test_plan_matches_what_is_written(world: World) -> None:
    plan = plan_counts(**SMALL)
    assert world.manifest["world"]["tasks"] == plan["tasks"]
    assert world.manifest["world"]["pope_negatives"] == plan["pope_negatives"]
    for split, minimum in plan["negatives_min"].items():
        written = world.manifest["world"]["negatives"][split]
        assert all(written[k] >= n for k, n in minimum.items())
    for task, by_split in plan["tasks"].items():
        for split, n in by_split.items():
            assert len(world.text(task, split).splitlines()) == n


def test_a_larger_test_split_leaves_what_models_train_on_unchanged(tmp_path: Path) -> None:
    """The README's powered comparisons evaluate a demo's models on a world generated with a
    larger ``test_per_task``: that is sound only while every training and validation file and
    image stays byte for byte the demo's, and the larger test split extends the smaller one."""
    small = generate_world(tmp_path / "small", seed=0, **TINY)
    large = generate_world(tmp_path / "large", seed=0, **{**TINY, "test_per_task": 24})
    assert large["world"]["tasks"]["vqa"]["test"] == 4 * small["world"]["tasks"]["vqa"]["test"]
    fs, fl = _files(tmp_path / "small"), _files(tmp_path / "large")

    def is_test(name: str) -> bool:
        return name.endswith("test.jsonl") or "/test/" in name

    kept = sorted(k for k in fs if not is_test(k) and k != "manifest.json")
    assert [k for k in kept if fl.get(k) != fs[k]] == []
    assert sorted(k for k in fl if not is_test(k) and k != "manifest.json") == kept
    assert any(k.startswith("images/caption/train/") for k in kept)
    for task in ("caption", "vqa", "pope", "kb"):  # drawn item by item from the split's stream
        lines = fs[f"{task}/test.jsonl"].decode().splitlines()
        assert fl[f"{task}/test.jsonl"].decode().splitlines()[: len(lines)] == lines, task


def test_more_probes_per_image_ask_the_same_images_more_questions(tmp_path: Path) -> None:
    one = generate_world(tmp_path / "one", seed=0, **TINY)
    three = generate_world(tmp_path / "three", seed=0, train_probes_per_image=3, **TINY)
    assert three["world"]["tasks"] == plan_counts(train_probes_per_image=3, **TINY)["tasks"]
    fa, fb = _files(tmp_path / "one"), _files(tmp_path / "three")
    changed = sorted(k for k in fa if k != "manifest.json" and fa[k] != fb.get(k))
    assert changed == ["pope/train.jsonl", "vqa/train.jsonl"]  # no new image, no other file
    assert fb.keys() == fa.keys()
    world = World(tmp_path / "three", three)
    for task in ("vqa", "pope"):
        samples = world.samples(task, "train")
        assert len(samples) == 3 * TINY["train_per_task"]
        # the first pass is the default file's, question for question
        assert [s.to_json() for s in samples[: TINY["train_per_task"]]] == [
            s.to_json() for s in World(tmp_path / "one", one).samples(task, "train")
        ]
    types: dict[str, set[str]] = {}
    for s in world.samples("vqa", "train"):
        image = s.segments[0].image
        assert image is not None
        types.setdefault(image, set()).add(s.meta["question_type"])
    assert min(len(t) for t in types.values()) >= 2  # a scene is asked different kinds
    with pytest.raises(ConfigError, match="train_probes_per_image"):
        plan_counts(train_probes_per_image=0)


def test_vqa_questions_per_image_apart_from_pope(tmp_path: Path) -> None:
    """``train_vqa_per_image`` writes the VQA file of that many probes per image and leaves
    every other file (POPE included) as ``train_probes_per_image`` writes it."""
    options = {**TINY, "train_probes_per_image": 2}
    two = generate_world(tmp_path / "two", seed=0, **options)
    three = generate_world(tmp_path / "three", seed=0, train_probes_per_image=3, **TINY)
    split = generate_world(tmp_path / "split", seed=0, train_vqa_per_image=3, **options)
    plan = plan_counts(train_vqa_per_image=3, **options)["tasks"]
    assert split["world"]["tasks"] == plan
    assert plan["vqa"]["train"] == 3 * TINY["train_per_task"]
    assert plan["pope"]["train"] == two["world"]["tasks"]["pope"]["train"]
    fs = _files(tmp_path / "split")
    for name, other in _files(tmp_path / "two").items():
        if name not in ("manifest.json", "vqa/train.jsonl"):
            assert fs[name] == other, name
    assert fs["vqa/train.jsonl"] == _files(tmp_path / "three")["vqa/train.jsonl"]
    assert three["world"]["tasks"]["vqa"] == plan["vqa"]
    with pytest.raises(ConfigError, match="train_vqa_per_image"):
        plan_counts(train_vqa_per_image=0)


def test_manifest_records_the_config(world: World) -> None:
    assert world.manifest["config"] == to_dict(WorldConfig(**SMALL))
    assert world.manifest["seed"] == 7
    on_disk = (world.root / "manifest.json").read_text(encoding="utf-8")
    assert '"heldout_combos"' in on_disk and '"relation_margin"' in on_disk


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"colour": ["red"]}, ConfigError, r"unknown config key 'colour'.*did you mean 'colours'"),
        ({"colours": ["red", "blue", "green"]}, ConfigError, r"colours=.*more than max_objects"),
        ({"relations": ["left"]}, ConfigError, r"relations=.*closed under inverse"),
        ({"story_group_size": 2}, ConfigError, r"story_group_size=2: must be >= 3"),
        ({"needle_pairs": "6"}, ConfigError, r"needle_pairs='6': expected an integer"),
        ({"shapes": ["circle", "square", "blob"]}, ValueError, r"unknown \['blob'\]"),
        ({"relation_margin": 0.45}, ValueError, r"cannot place \d objects.*relation_margin=0.45"),
    ],
)
def test_bad_options_name_the_field(
    tmp_path: Path, options: dict, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        generate_world(tmp_path / "w", **TINY, **options)
    assert not (tmp_path / "w").exists()


def test_world_section_is_in_the_config_tree() -> None:
    cfg = load_config(None, ["world.image_size=32", "world.colours=[red, blue, green, cyan, pink]"])
    assert cfg.world.image_size == 32 and cfg.world.colours[-1] == "pink"
    with pytest.raises(ConfigError, match=r"world\.noise=2\.0: must be in \[0, 1\]"):
        load_config(None, ["world.noise=2"])
