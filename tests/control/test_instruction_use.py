"""``sugar search/ask --instruction`` and the API's ``search``/``ask(instruction=...)``: the
query goes through the bundle's control branch (checked against ``embed_instructed``); at
initialisation the answer is the base's, bit for bit; a bundle without a branch is a clear
error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import sugar
from sugar.cli import app
from sugar.control.embed import embed_instructed
from sugar.rag import PromptTemplate, build_prompt, question_sample
from tests.control.steered import Steered, rag_world, steered

__all__ = ["rag_world", "steered"]

INSTRUCTION = "Find the fact this question needs."


def _cli(*args: Any, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.stderr


def _question(steered: Steered) -> str:
    """A knowledge question's text (kb samples are ``[image?, question, answer]``)."""
    texts = [s.text for s in steered.world.kb[0].segments if s.role == "context" and s.text]
    assert texts
    return texts[0]


def _reference_ids(steered: Steered, bundle: Path, question: str, k: int) -> list[str]:
    """The index's top ``k`` for the steered query, computed from ``embed_instructed``."""
    model = sugar.load(bundle)
    assert model.control is not None
    query = build_prompt(question_sample(question), [], PromptTemplate())
    vectors = embed_instructed(model.backbone, model.projector, model.control, [query],
                               [INSTRUCTION], steered.world.root)  # fmt: skip
    hits = model.open_index(steered.index(bundle)).search(vectors, k)[0]
    return [hit["id"] for hit in hits]


def test_api_search_and_ask_steer_through_the_branch(steered: Steered) -> None:
    root, question = steered.world.root, _question(steered)
    model = sugar.load(steered.moved)
    index = steered.index(steered.moved)
    expected = _reference_ids(steered, steered.moved, question, 5)
    hits = model.search(question, 5, index=index, instruction=INSTRUCTION, root=root)
    assert [hit["id"] for hit in hits] == expected
    plain = model.search(question, 5, index=index, root=root)
    assert [h["score"] for h in plain] != [h["score"] for h in hits]  # the branch moved it
    answer = model.ask(question, k=3, index=index, root=root, instruction=INSTRUCTION)
    assert [s["id"] for s in answer.sources] == expected[:3]
    assert all(s["payload"] in str(answer.prompt.to_dict()) for s in answer.sources)


def test_a_branch_at_initialisation_answers_as_the_base(steered: Steered) -> None:
    root, question = steered.world.root, _question(steered)
    model = sugar.load(steered.zero)
    index = steered.index(steered.zero)
    steered_answer = model.ask(question, k=3, index=index, root=root, instruction=INSTRUCTION)
    plain_answer = model.ask(question, k=3, index=index, root=root)
    assert steered_answer.to_dict() == plain_answer.to_dict()
    vectors = model.steered_vectors([question_sample(question)], INSTRUCTION, root)
    assert torch.equal(vectors, model.embed([question_sample(question)], root=root))


def test_cli_ask_and_search_take_an_instruction(steered: Steered) -> None:
    question = _question(steered)
    bundle, index = steered.moved, steered.index(steered.moved)
    expected = _reference_ids(steered, bundle, question, 3)
    asked = json.loads(_cli("ask", question, "--model", bundle, "--index", index, "-k", 3,
                            "--instruction", INSTRUCTION))  # fmt: skip
    assert [s["id"] for s in asked["sources"]] == expected
    found = json.loads(_cli("search", question, "--model", bundle, "--index", index, "-k", 3,
                            "--instruction", INSTRUCTION))  # fmt: skip
    assert [hit["id"] for hit in found] == expected


@pytest.mark.parametrize("command", ["ask", "search"])
def test_an_instruction_without_a_branch_is_one_clear_line(steered: Steered, command: str) -> None:
    plain, index = steered.world.bundle, steered.index(steered.world.bundle)
    args = [command, "what is it", "--model", plain, "--index", index]
    error = _cli(*args, "--instruction", INSTRUCTION, code=2)
    assert error.startswith("sugar: error: instruction: the bundle") and error.count("\n") == 1
    assert "has no control branch" in error and "sugar train-control" in error
    empty = _cli(command, "what is it", "--model", steered.moved, "--index",
                 steered.index(steered.moved), "--instruction", " ", code=2)  # fmt: skip
    assert "instruction=' ': must be non-empty text" in empty
    if command == "ask":
        alone = _cli("ask", "what", "--model", steered.moved, "--no-retrieval",
                     "--instruction", INSTRUCTION, code=2)  # fmt: skip
        assert "an instruction steers retrieval: it needs an index" in alone
