"""The retrieval micro-batch: query/document pairs, chunked encoding, and the loop that uses it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.losses.structure import StructureOptions
from sugar.losses.weights import LossWeights
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.train import states as states_module
from sugar.train.loop import train
from sugar.train.objective import ChunkedStates, SugarObjective
from sugar.train.retrieval import (
    check_pool,
    pair_roles,
    retrieval_batch,
    retrieval_pair,
    split_pool,
)
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher

OPTIONS = StructureOptions(projector_dim=8)


def _read(world: Path, task: str) -> list[Sample]:
    return read_samples(world / task / "train.jsonl", world)


def _model(samples: list[Sample]) -> TinyMLLM:
    texts = [g.text for s in samples for g in s.segments if g.text]
    tokenizer = Tokenizer.train(texts, 300)
    return TinyMLLM(tokenizer, width=32, layers=2, heads=2, feature_cache=None).eval()


def test_each_source_becomes_a_query_and_a_document_of_one_group(loop_world: Path) -> None:
    caption, story, kb = (_read(loop_world, t)[0] for t in ("caption", "story", "kb"))
    query, document = retrieval_pair(caption)
    assert [g.kind for g in query.segments] == ["text"] and query.segments[0].role == "context"
    assert [g.kind for g in document.segments] == ["image"]
    query, document = retrieval_pair(story)
    assert all(g.role == "context" for g in query.segments)
    assert document.segments == [Segment.image_(story.meta["target_image"])]
    query, document = retrieval_pair(kb)
    payload = kb.segments[0].text
    assert payload not in [g.text for g in query.segments]  # the fact is not in the query
    assert all(g.role == "context" for g in query.segments)
    assert [g.to_dict() for g in document.segments] == kb.meta["retrieval_key"]
    for q, d in (retrieval_pair(caption), retrieval_pair(story), retrieval_pair(kb)):
        assert q.meta["view_of"] == d.meta["view_of"]
        assert pair_roles([d, q]) == [(1, 0)]


def test_a_pool_with_a_sample_that_makes_no_pair_is_refused(loop_world: Path) -> None:
    vqa = _read(loop_world, "vqa")[0]
    with pytest.raises(ValueError, match=r"pool.jsonl: sample .* is not a retrieval source"):
        check_pool([vqa], "pool.jsonl")


def test_batches_hold_the_configured_pairs_and_replay_exactly(loop_world: Path) -> None:
    pool = _read(loop_world, "caption") + _read(loop_world, "story") + _read(loop_world, "kb")
    pools = split_pool(pool)
    first = retrieval_batch(pools, (5, 3), seed=0, micro_step=4)
    assert len(first) == 16 and len(pair_roles(first)) == 8
    assert [s.id for s in first] == [s.id for s in retrieval_batch(pools, (5, 3), 0, 4)]
    assert [s.id for s in first] != [s.id for s in retrieval_batch(pools, (5, 3), 0, 5)]
    only_stories = retrieval_batch(([], pools[1]), (5, 3), seed=0, micro_step=0)
    assert len(pair_roles(only_stories)) == 8  # no captions: every pair from the other pool


def test_chunked_encoding_gives_the_single_pass_vectors(loop_world: Path) -> None:
    pool = _read(loop_world, "caption")[:6] + _read(loop_world, "story")[:2]
    samples = [view for source in pool for view in retrieval_pair(source)]
    model = _model(pool)
    objective = SugarObjective(32, LossWeights(alpha=0.0, contrastive=1.0), OPTIONS)
    with torch.no_grad():
        batch = model.collate(samples, loop_world)
        single = ChunkedStates.single(model(batch).hidden, batch.spans)
        chunked = objective.encode_chunks(model, samples, loop_world)
        assert len(chunked.chunks) > 1
        b = torch.tensor([0, 3, 7, 12, 15, 15])
        e = torch.tensor([len(single.spans[i]) - 1 for i in b.tolist()])
        e[-1] = 0
        torch.testing.assert_close(
            chunked.embed(b, e, objective.projector, "mean"),
            single.embed(b, e, objective.projector, "mean"),
            atol=1e-5, rtol=1e-5,
        )  # fmt: skip


def _padded_cost(chunks: list[list[int]], sizes: list[int]) -> int:
    return sum(len(c) * max(sizes[i] for i in c) + states_module._PASS_COST for c in chunks)


def _best_cost(sizes: list[int], limit: int) -> int:
    """The naive optimum: every way to cut the sorted rows into runs of at most ``limit``."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    best = None
    for mask in range(1 << (len(order) - 1)):
        chunks, current = [], [order[0]]
        for k in range(1, len(order)):
            if mask >> (k - 1) & 1:
                chunks.append(current)
                current = []
            current.append(order[k])
        chunks.append(current)
        if max(len(c) for c in chunks) <= limit:
            cost = _padded_cost(chunks, sizes)
            best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(6))
def test_length_chunks_are_an_optimal_partition(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    count = int(torch.randint(1, 10, (1,), generator=generator))
    sizes = [int(x) for x in torch.randint(1, 400, (count,), generator=generator)]
    samples = [Sample(str(i), [Segment.text_("x" * n)]) for i, n in enumerate(sizes)]
    chunks = states_module._length_chunks(range(count), samples, 4)
    assert sorted(i for c in chunks for i in c) == list(range(count))  # every row, once
    assert max(len(c) for c in chunks) <= 4
    assert _padded_cost(chunks, sizes) == _best_cost(sizes, 4)


def test_generative_loss_in_chunks_equals_one_pass(loop_world: Path) -> None:
    samples = _read(loop_world, "caption")[:10] + _read(loop_world, "vqa")[:10]
    model = _model(samples)
    shared = SugarObjective(32, LossWeights(alpha=0.0, contrastive=1.0), OPTIONS)
    alone = SugarObjective(32, LossWeights(alpha=0.0), OPTIONS)
    with torch.no_grad():
        one_pass = shared(model, samples, loop_world)["lm_loss"]  # shares its forward pass
        chunked = alone(model, samples, loop_world)["lm_loss"]  # L_g alone: in chunks
    torch.testing.assert_close(chunked, one_pass, atol=1e-5, rtol=1e-5)


def test_loop_trains_both_losses_on_the_retrieval_batch_every_step(
    loop_world: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        loop_world, tmp_path / "run", "structure.alpha=1.0", "contrastive.weight=1.0",
        "train.retrieval_batch=4", "train.retrieval_interleaved=2",
        "data.train=[caption/train.jsonl, story/train.jsonl, kb/train.jsonl, vqa/train.jsonl]",
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, teacher=FakeTeacher(), progress=False)
    assert not any("could not run" in str(w.message) for w in caught)
    steps = [h for h in result.history if "loss" in h and "val_loss" not in h]
    assert steps and all(h["contrastive_pairs"] == 6 for h in steps)
    assert all("structure_loss" in h for h in steps)
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss_share"] == {"structure_loss": 1.0, "contrastive_loss": 1.0}


def test_a_pool_without_sources_is_refused_before_training(
    loop_world: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        loop_world, tmp_path / "run", "structure.alpha=0", "contrastive.weight=1.0",
        "train.retrieval_batch=4", "data.train=[vqa/train.jsonl]",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"no sample of data\.train"):
        train(cfg, progress=False)
