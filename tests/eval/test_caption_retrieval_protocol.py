"""Caption retrieval with several captions per image (COCO / Flickr30k protocol): the gallery
is the distinct image paths. Against the former one-image-per-caption formula, kept here as the
naive reference: equal wherever every path is distinct (the built-in world), right where paths
repeat."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.data.world import generate_world
from sugar.eval import validation
from sugar.eval.grounding import caption_pairs
from sugar.eval.metrics import recall_at_k
from sugar.eval.tasks import NA, EvalModel, Evaluable, caption_retrieval
from tests.eval.test_tasks import KnownScores, tiny_eval

__all__ = ["tiny_eval"]  # the shared fixture of tests/eval/test_tasks.py


def one_per_caption_retrieval(
    model: Evaluable, samples: Sequence[Sample], root: Path
) -> dict[str, Any]:
    """The former ``caption_retrieval``, verbatim: caption i's image is item i of the gallery."""
    out: dict[str, Any] = {}
    groups = {"": list(samples)}
    heldout = [s for s in samples if s.meta.get("heldout_combo") in (True, "True")]
    if heldout:
        groups["heldout_"] = heldout
    for prefix, group in groups.items():
        pairs = caption_pairs(group)
        images = model.embed([Sample(f"image:{i}", [Segment.image_(i)]) for i, _ in pairs], root)
        texts = model.embed([Sample(f"text:{t}", [Segment.text_(t)]) for _, t in pairs], root)
        for k in (1, 5):
            if images is None or texts is None or len(pairs) < k:
                out[f"{prefix}t2i_r{k}"] = out[f"{prefix}i2t_r{k}"] = NA
                continue
            relevant = torch.arange(len(pairs))
            out[f"{prefix}t2i_r{k}"] = recall_at_k(texts @ images.T, relevant, k)
            out[f"{prefix}i2t_r{k}"] = recall_at_k(images @ texts.T, relevant, k)
            if prefix == "" and k == 1:
                per_item = out.setdefault("per_item", {})
                per_item["t2i_r1"] = ((texts @ images.T).argmax(1) == relevant).float().tolist()
                per_item["i2t_r1"] = ((images @ texts.T).argmax(1) == relevant).float().tolist()
    return out


def one_per_caption_r1(texts: torch.Tensor, images: torch.Tensor) -> float:
    """The former ``caption_retrieval_r1`` formula: caption i's image is image i."""
    return float(recall_at_k(texts @ images.T, torch.arange(len(texts)), 1))


@pytest.fixture(scope="module")
def world_captions(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """The built-in world's caption test split: distinct paths, one caption each, some of them
    held-out attribute combinations."""
    root = tmp_path_factory.mktemp("protocol") / "world"
    generate_world(root, seed=4, train_per_task=12, val_per_task=2, test_per_task=40)
    samples = read_samples(root / "caption" / "test.jsonl", root)
    images = [s.segments[0].image for s in samples]
    assert len(set(images)) == len(images) == 40
    assert any(s.meta.get("heldout_combo") in (True, "True") for s in samples)
    return samples


def _vectors(samples: Sequence[Sample], seed: int, levels: int | None) -> dict[str, list[float]]:
    """A random vector per image path and per caption; ``levels``: each coordinate one of that
    many values, so that many scores tie (where the pessimistic rank and argmax matter)."""
    generator = torch.Generator().manual_seed(seed)
    keys = [k for s in samples for k in (s.segments[0].image, s.segments[1].text)]
    table = {}
    for key in keys:
        assert key is not None
        vector = torch.rand(4, generator=generator)
        if levels is not None:
            vector = (vector * levels).floor()
        table[key] = vector.tolist()
    return table


@pytest.mark.parametrize(("seed", "levels"), [(0, None), (1, None), (2, 2), (3, 3)])
def test_distinct_paths_give_exactly_the_former_figures_and_items(
    world_captions: list[Sample], seed: int, levels: int | None
) -> None:
    model = KnownScores(_vectors(world_captions, seed, levels), {})
    new = caption_retrieval(model, world_captions, Path("."))
    former = one_per_caption_retrieval(model, world_captions, Path("."))
    if levels is None:  # no ties: every figure and every per-item list as before
        assert new == former
    else:  # ties: the figures as before; the per-item hits are now the figures' own
        # pessimistic ones (the former lists broke ties by first index, so their means could
        # differ from the figures)
        assert {k: v for k, v in new.items() if k != "per_item"} == {
            k: v for k, v in former.items() if k != "per_item"
        }
        for metric in ("t2i_r1", "i2t_r1"):
            assert sum(new["per_item"][metric]) / len(world_captions) == pytest.approx(new[metric])
    assert "heldout_t2i_r1" in new and len(new["per_item"]["i2t_r1"]) == len(world_captions)


def test_a_real_model_gives_exactly_the_former_figures_on_the_world(
    tiny_eval: tuple[Path, EvalModel, EvalModel],
) -> None:
    root, with_projector, without = tiny_eval
    samples = read_samples(root / "caption" / "test.jsonl", root)
    for model in (with_projector, without):
        with torch.no_grad():
            new = caption_retrieval(model, samples, root)
            assert new == one_per_caption_retrieval(model, samples, root)


def _coco(heldout: Sequence[str] = ()) -> tuple[list[Sample], dict[str, list[float]]]:
    """3 images x 2 captions, one sample per caption (image a's are a1, a2, ...), and vectors
    whose answer is known by hand: every caption is nearest its own image, and image a's
    nearest caption is its second one, a2."""
    vectors = {
        "a.png": [1.0, 0.0, 0.0], "b.png": [0.0, 1.0, 0.0], "c.png": [0.0, 0.0, 1.0],
        "a1": [0.8, 0.2, 0.0], "a2": [1.0, 0.0, 0.0], "b1": [0.0, 1.0, 0.0],
        "b2": [0.3, 0.7, 0.0], "c1": [0.0, 0.0, 1.0], "c2": [0.1, 0.0, 0.9],
    }  # fmt: skip
    samples = [
        Sample(
            f"{image}{n}",
            [Segment.image_(f"{image}.png"), Segment.text_(f"{image}{n}", "target")],
            meta={"heldout_combo": image in heldout},
        )
        for image in "abc"
        for n in (1, 2)
    ]
    return samples, vectors


def test_several_captions_per_image_are_scored_against_the_distinct_images() -> None:
    samples, vectors = _coco()
    model = KnownScores(vectors, {})
    out = caption_retrieval(model, samples, Path("."))
    # t2i: each caption's best image is its own (a1: .8 > .2 > 0; b2: .7 > .3; c2: .9 > .1)
    assert out["t2i_r1"] == 1.0
    assert out["t2i_r5"] == NA  # 3 distinct images: no top 5
    # i2t: a's best caption is a2, b's b1, c's c1: each one of its own
    assert out["i2t_r1"] == 1.0 and out["i2t_r5"] == 1.0  # 6 captions
    assert out["per_item"] == {"t2i_r1": [1.0] * 6, "i2t_r1": [1.0] * 3}
    # the former formula: each caption's image has a copy of equal score, ranked ahead of it
    # (pessimistic rank), so no caption ranked first; of each image's two copies, the one
    # asking for its less similar caption (a1, b2, c2) missed
    former = one_per_caption_retrieval(model, samples, Path("."))
    assert former["t2i_r1"] == 0.0
    assert former["i2t_r1"] == 0.5


def test_an_image_whose_best_caption_is_another_images_misses() -> None:
    samples, vectors = _coco()
    vectors["c.png"] = [0.8, 0.0, 0.6]  # c now leans towards a's captions
    out = caption_retrieval(KnownScores(vectors, {}), samples, Path("."))
    # image c: a2 .8, a1 .64, c2 .62, c1 .6, b2 .24, b1 0 -> a2 first: a miss; c2 third
    assert out["per_item"]["i2t_r1"] == [1.0, 1.0, 0.0]
    assert out["i2t_r1"] == pytest.approx(2 / 3) and out["i2t_r5"] == 1.0
    # every caption still prefers its own image (a1: .8 > .64; c1: .6 > 0; c2: .62 > .1)
    assert out["per_item"]["t2i_r1"] == [1.0] * 6 and out["t2i_r1"] == 1.0


def test_held_out_captions_get_the_same_protocol() -> None:
    samples, vectors = _coco(heldout=("a", "b"))
    out = caption_retrieval(KnownScores(vectors, {}), samples, Path("."))
    assert out["heldout_t2i_r1"] == 1.0 and out["heldout_i2t_r1"] == 1.0
    assert out["heldout_t2i_r5"] == NA and out["heldout_i2t_r5"] == NA  # 2 images, 4 captions
    assert set(out["per_item"]) == {"t2i_r1", "i2t_r1"}  # the whole split only


def _validation_r1(
    pairs: Sequence[Sample], vectors: dict[str, list[float]], monkeypatch: pytest.MonkeyPatch
) -> tuple[float, list[list[Sample]]]:
    """``caption_retrieval_r1`` with ``embed_vectors`` reading ``vectors``: R@1 and every list
    of samples it embedded."""
    calls: list[list[Sample]] = []

    def embed_vectors(model: Any, projector: Any, samples: Sequence[Sample], root: Any,
                      **options: Any) -> torch.Tensor:  # fmt: skip
        calls.append(list(samples))
        return torch.tensor([vectors[s.segments[0].text or s.segments[0].image or ""]
                             for s in samples])  # fmt: skip

    monkeypatch.setattr(validation, "embed_vectors", embed_vectors)
    objective = SimpleNamespace(
        projector=None, options=SimpleNamespace(image_pool="mean", slice_text_by=None)
    )
    r1 = validation.caption_retrieval_r1(None, objective, pairs, ".", batch_size=4)  # type: ignore[arg-type]
    return r1, calls


@pytest.mark.parametrize(("seed", "levels"), [(0, None), (2, 2)])
def test_validation_r1_is_the_former_figure_on_distinct_paths(
    world_captions: list[Sample], monkeypatch: pytest.MonkeyPatch, seed: int, levels: int | None
) -> None:
    vectors = _vectors(world_captions, seed, levels)
    r1, (images, texts) = _validation_r1(world_captions, vectors, monkeypatch)
    assert [s.segments[0].image for s in images] == [s.segments[0].image for s in world_captions]
    assert [s.segments[0].text for s in texts] == [s.segments[1].text for s in world_captions]
    image_vectors = torch.tensor([vectors[s.segments[0].image or ""] for s in world_captions])
    text_vectors = torch.tensor([vectors[s.segments[1].text or ""] for s in world_captions])
    assert r1 == one_per_caption_r1(text_vectors, image_vectors)


def test_validation_r1_ranks_each_caption_among_the_distinct_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples, vectors = _coco()
    r1, (images, texts) = _validation_r1(samples, vectors, monkeypatch)
    assert [s.segments[0].image for s in images] == ["a.png", "b.png", "c.png"]
    assert len(texts) == 6
    assert r1 == 1.0  # the former formula: 0.0 (a copy of each right image ties ahead)
    six = torch.tensor([vectors[s.segments[0].image or ""] for s in samples])
    captions = torch.tensor([vectors[s.segments[1].text or ""] for s in samples])
    assert one_per_caption_r1(captions, six) == 0.0
