"""The server as users run it: ``sugar serve`` in a child process (uvicorn on 127.0.0.1), over
real HTTP, with the OpenAI Python client; and a bounded load test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from sugar.serve.load import run_load, server_process
from tests.serve.conftest import Served, data_url, own_index


@pytest.fixture(scope="module")
def server(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    index = own_index(served, tmp_path_factory.mktemp("uvicorn"))
    args = ["--model", str(served.world.bundle), "--index", str(index),
            "--media", str(served.world.root)]  # fmt: skip
    with server_process(args, env={"SUGAR_API_KEY": "k3y"}) as url:
        yield url


AUTH = {"Authorization": "Bearer k3y"}


def test_real_server_endpoints(server: str, served: Served) -> None:
    model, world = served.model, served.world
    assert httpx.get(server + "/health").json()["auth"] is True
    assert "search-form" in httpx.get(server + "/").text
    assert httpx.get(server + "/v1/models").status_code == 401  # the key came from the env
    names = httpx.get(server + "/v1/models", headers=AUTH).json()["data"]
    assert names[0]["id"] == model.directory.name
    image = world.captions[0].images[0]
    body = {
        "input": ["A red square.", {"text": "A square.", "image": data_url(world.root / image)}]
    }
    data = httpx.post(server + "/v1/embeddings", json=body, headers=AUTH).json()["data"]
    expected = model.embed(texts=["A red square."])
    assert isinstance(expected, torch.Tensor)
    torch.testing.assert_close(torch.tensor(data[0]["embedding"]), expected[0], rtol=0, atol=1e-6)
    question = world.kb_items[1].segments[0].text
    hits = httpx.post(server + "/v1/search", json={"query": question, "k": 2}, headers=AUTH)
    assert [h["id"] for h in hits.json()["data"]] == [
        h["id"] for h in model.search(str(question), k=2, index=served.index)
    ]
    bad = httpx.post(server + "/v1/embeddings", content=b"[", headers=AUTH)
    assert bad.status_code == 400 and "error" in bad.json()
    add = {"items": [{"id": "uv-1", "text": "A green star.", "payload": "Made in Rome."}]}
    assert httpx.post(server + "/v1/index/add", json=add, headers=AUTH).json()["added"] == 1
    assert httpx.post(server + "/v1/index/delete", json={"ids": ["uv-1"]},
                      headers=AUTH).json()["deleted"] == 1  # fmt: skip


def test_openai_client_against_the_real_server(server: str, served: Served) -> None:
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server + "/v1", api_key="k3y", max_retries=0)
    name = served.model.directory.name
    vectors = api.embeddings.create(model=name, input=["A red square.", "A blue circle."])
    expected = served.model.embed(texts=["A red square.", "A blue circle."])
    assert isinstance(expected, torch.Tensor)
    got = np.array([d.embedding for d in vectors.data])
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-6)
    stream = api.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Where was object 7 made?"}],
        max_tokens=4, stream=True, extra_body={"retrieval_k": 2},
    )  # fmt: skip
    chunks = list(stream)
    assert len(chunks[0].model_extra["sources"]) == 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reply = api.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Where was object 7 made?"}],
        max_tokens=4, extra_body={"retrieval_k": 2},
    )  # fmt: skip
    assert reply.choices[0].message.content == text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):
        api.embeddings.create(model=name, input=[])
    assert api.models.list().data[0].id == name  # still serving


def _embedding_bodies(n: int) -> list[dict[str, object]]:
    colours, shapes = ["red", "blue", "green", "yellow"], ["square", "circle", "star", "tile"]
    return [{"input": f"A {colours[i % 4]} {shapes[(i // 4) % 4]} number {i}."} for i in range(n)]


@pytest.mark.slow
def test_load_200_requests_16_clients_and_the_batching_speedup(
    served: Served, tmp_path: Path
) -> None:
    """200 concurrent embedding requests from 16 clients: none fails or is lost or mixed up,
    with and without micro-batching; figures go to SUGAR_TEST_ARTEFACTS/load_test.json."""
    bodies = _embedding_bodies(200)
    texts = [str(body["input"]) for body in bodies]
    expected = served.model.embed(texts=texts)
    assert isinstance(expected, torch.Tensor)
    figures = {}
    for batching in (True, False):
        args = ["--model", str(served.world.bundle), "--batching" if batching else "--no-batching"]
        with server_process(args) as url:
            run_load(url, bodies[:16], clients=16)  # warm-up
            stats = run_load(url, bodies, clients=16)
            health = httpx.get(url + "/health").json()["batching"]
        assert stats["errors"] == 0 and stats["ok"] == 200, stats["statuses"]
        got = torch.tensor([r["data"][0]["embedding"] for r in stats.pop("responses")])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # none lost or swapped
        figures["batching" if batching else "one_by_one"] = {**stats, "server": health}
    figures["speedup"] = round(
        figures["batching"]["requests_per_s"] / figures["one_by_one"]["requests_per_s"], 2
    )
    out = Path(os.environ.get("SUGAR_TEST_ARTEFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "load_test.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    assert figures["batching"]["server"]["largest_batch"] > 1
