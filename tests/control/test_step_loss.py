"""The control run's step loss (``candidates: batch | corpus``) against a per-query loop written
out from the queries' own ``positives`` / ``negatives`` / ``exclude`` ids, values and gradients;
and a CLI run with ``candidates=corpus``, which skips mining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sugar.config import ConfigError
from sugar.control.config import load_control_config
from sugar.control.train import step_loss
from sugar.data.instructed import InstructedSet, read_instructed
from tests.control.conftest import ControlWorld


def naive_loss(
    vectors: torch.Tensor, corpus: torch.Tensor, data: InstructedSet, picked: list[int],
    candidates: list[str], temperature: float,
) -> torch.Tensor:  # fmt: skip
    """Mean over queries of -log(sum over positives / sum over the rest), one query at a time."""
    ids = [sample.id for sample in data.corpus]
    losses = []
    for b, i in enumerate(picked):
        meta = data.queries[i].meta
        kept = [c for c in candidates if c not in meta.get("exclude", [])]
        scores = {c: vectors[b] @ corpus[ids.index(c)] / temperature for c in kept}
        every = torch.stack([scores[c].exp() for c in kept]).sum()
        good = torch.stack([scores[c].exp() for c in kept if c in meta["positives"]]).sum()
        losses.append(-(good / every).log())
    return torch.stack(losses).mean()


@pytest.fixture(scope="module")
def instructed(control_world: ControlWorld) -> InstructedSet:
    return read_instructed(control_world.root / "instructed" / "train.jsonl", control_world.root)


def unit(rows: int, width: int, seed: int) -> torch.Tensor:
    vectors = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(vectors.double(), dim=-1)


def test_corpus_candidates_match_the_naive_loss_and_its_gradient(instructed: InstructedSet) -> None:
    picked = [0, 3, 5, 8, 13]
    corpus = unit(len(instructed.corpus), 8, 1)
    vectors = unit(len(picked), 8, 2).requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    got = step_loss(vectors, corpus, instructed, picked, {}, generator, 0.05, "corpus")
    (got_grad,) = torch.autograd.grad(got, vectors)
    every = [sample.id for sample in instructed.corpus]
    want = naive_loss(vectors, corpus, instructed, picked, every, 0.05)
    (want_grad,) = torch.autograd.grad(want, vectors)
    assert math.isfinite(got.item()) and got.item() > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    assert torch.allclose(got_grad, want_grad, rtol=1e-8, atol=1e-12)
    assert any(instructed.queries[i].meta.get("exclude") for i in picked)  # the mask is exercised


def test_batch_candidates_match_the_naive_loss(instructed: InstructedSet) -> None:
    picked = [1, 2, 7, 11]
    corpus = unit(len(instructed.corpus), 8, 3)
    vectors = unit(len(picked), 8, 4)
    mined = {instructed.queries[2].id: [instructed.corpus[0].id, instructed.corpus[5].id]}
    got = step_loss(vectors, corpus, instructed, picked, mined, torch.Generator().manual_seed(9),
                    0.1, "batch")  # fmt: skip
    generator = torch.Generator().manual_seed(9)  # the same draws of one positive per query
    candidates: list[str] = []
    for i in picked:
        meta = instructed.queries[i].meta
        positive = meta["positives"][int(torch.randint(len(meta["positives"]), (1,),
                                                       generator=generator))]  # fmt: skip
        for cid in [positive, *meta.get("negatives", []), *mined.get(instructed.queries[i].id, [])]:
            if cid not in candidates:
                candidates.append(cid)
    assert len(candidates) < len(instructed.corpus)  # a strict subset: unlike corpus
    want = naive_loss(vectors, corpus, instructed, picked, candidates, 0.1)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    corpus_loss = step_loss(vectors, corpus, instructed, picked, mined, generator, 0.1, "corpus")
    assert corpus_loss.item() > got.item()  # more negatives, the same positives at least


def test_bad_candidates_name_the_key() -> None:
    with pytest.raises(ConfigError, match="candidates"):
        load_control_config(None, ["base=b", "candidates=all"])


def test_a_corpus_run_skips_mining_and_trains(control_world: ControlWorld, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = control_world.train_control(run, "lr=0.01", "candidates=corpus")
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["mining"] for r in log if "mining" in r] == ["skipped (candidates: corpus)"]
    assert sum("validation" in r and "round" in r for r in log) == 2
    extras = load_file(str(run / "model" / "extras.safetensors"))
    joins = [extras[k] for k in extras if k.startswith("control.zero.")]
    assert joins and any(tensor.abs().sum() > 0 for tensor in joins)  # the branch trained
