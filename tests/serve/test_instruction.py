"""The server's ``instruction`` (embeddings, search, chat with retrieval): through the bundle's
control branch, equal to ``SugarModel.steered_vectors``; a 400 error naming the field when the
bundle has no branch or the instruction is empty."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sugar
from sugar.data.schema import Sample, Segment
from tests.control.steered import Steered, steered

__all__ = ["steered"]

INSTRUCTION = "Find the fact this question needs."


@contextmanager
def _client(steered: Steered, bundle: Path, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from sugar.serve.app import ServeSettings, create_app

    index = tmp_path / "kb"
    shutil.copytree(steered.index(bundle), index)
    settings = ServeSettings(index=index, media=steered.world.root)
    with TestClient(create_app(sugar.load(bundle), settings)) as client:
        yield client


def _expected(bundle: Path, texts: list[str]) -> torch.Tensor:
    model = sugar.load(bundle)
    samples = [Sample(f"q{i}", [Segment.text_(t)]) for i, t in enumerate(texts)]
    return model.steered_vectors(samples, INSTRUCTION, ".")


def test_embeddings_search_and_chat_take_an_instruction(steered: Steered, tmp_path: Path) -> None:
    texts = ["a red circle", "where was object 42 made?"]
    with _client(steered, steered.moved, tmp_path) as client:
        body = {"input": texts, "instruction": INSTRUCTION}
        answer = client.post("/v1/embeddings", json=body)
        assert answer.status_code == 200, answer.text
        vectors = np.array([row["embedding"] for row in answer.json()["data"]])
        np.testing.assert_allclose(vectors, _expected(steered.moved, texts).numpy(), atol=1e-6)
        plain = client.post("/v1/embeddings", json={"input": texts}).json()["data"]
        assert not np.allclose(vectors, np.array([row["embedding"] for row in plain]), atol=1e-3)
        assert (
            answer.json()["usage"]["prompt_tokens"]
            > client.post("/v1/embeddings", json={"input": texts}).json()["usage"]["prompt_tokens"]
        )  # the branch reads the instruction too

        model = sugar.load(steered.moved)
        index = model.open_index(steered.index(steered.moved))
        expected = [h["id"] for h in index.search(_expected(steered.moved, texts[1:]), 3)[0]]
        found = client.post("/v1/search", json={"query": texts[1], "k": 3,
                                                "instruction": INSTRUCTION})  # fmt: skip
        assert found.status_code == 200, found.text
        assert [hit["id"] for hit in found.json()["data"]] == expected
        chat = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": texts[1]}], "retrieval_k": 3,
            "instruction": INSTRUCTION, "max_tokens": 4,
        })  # fmt: skip
        assert chat.status_code == 200, chat.text
        assert [s["id"] for s in chat.json()["sources"]] == expected


def test_an_instruction_the_bundle_cannot_follow_is_a_400(steered: Steered, tmp_path: Path) -> None:
    requests = [
        ("/v1/embeddings", {"input": "a red circle"}),
        ("/v1/search", {"query": "a red circle"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                  "retrieval_k": 2}),
    ]  # fmt: skip
    with _client(steered, steered.world.bundle, tmp_path / "plain") as client:
        for path, body in requests:
            answer = client.post(path, json={**body, "instruction": INSTRUCTION})
            assert answer.status_code == 400, (path, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "no_control_branch" and error["param"] == "instruction"
            assert "has no control branch" in error["message"]
    with _client(steered, steered.moved, tmp_path / "moved") as client:
        for path, body in requests:
            answer = client.post(path, json={**body, "instruction": "  "})
            assert answer.status_code == 400 and "an empty text" in answer.text, path
        chat = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "instruction": INSTRUCTION,
        })  # fmt: skip
        assert chat.status_code == 400 and "set retrieval_k" in chat.text
