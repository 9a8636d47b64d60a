"""The server through TestClient: every endpoint, OpenAI request shapes, equality with
``sugar.load(...).embed``, streaming, auth, and a 4xx JSON error for every bad input class."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from sugar.data.schema import Sample, Segment
from sugar.index import Index
from sugar.serve.app import ServeSettings, create_app
from sugar.serve.inputs import Limits
from tests.serve.conftest import Served, data_url, own_index, png_url


def test_health_models_and_page(client: TestClient, served: Served) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == served.model.directory.name
    assert health["index"] == len(served.world.kb_items)
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == served.model.directory.name
    assert models["data"][0]["identity"] == served.model.identity
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text


def test_embeddings_equal_sugar_embed(client: TestClient, served: Served) -> None:
    world, model = served.world, served.model
    image = world.captions[0].images[0]
    texts = ["A red square.", "Where was object 7 made?", "A blue circle left of a square."]
    body = {"model": model.directory.name, "input": texts, "encoding_format": "float"}
    data = client.post("/v1/embeddings", json=body).json()
    assert [d["index"] for d in data["data"]] == [0, 1, 2] and data["usage"]["prompt_tokens"] > 0
    got = torch.tensor([d["embedding"] for d in data["data"]])
    expected = model.embed(texts=texts)
    assert isinstance(expected, torch.Tensor)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # a single string, an image alone, a text with its image, an interleaved sample
    items = [
        "A red square.",
        {"image": data_url(world.root / image)},
        {"text": "A red square.", "image": data_url(world.root / image)},
        [{"image": data_url(world.root / image)}, "A red square.", {"text": "Left of it."}],
    ]
    data = client.post("/v1/embeddings", json={"input": items}).json()
    got = torch.tensor([d["embedding"] for d in data["data"]])
    samples = [
        Sample("a", [Segment.text_("A red square.")]),
        Sample("b", [Segment.image_(image)]),
        Sample("c", [Segment.image_(image), Segment.text_("A red square.")]),
        Sample(
            "d",
            [Segment.image_(image), Segment.text_("A red square."), Segment.text_("Left of it.")],
        ),
    ]
    expected = model.embed(samples, root=world.root)
    assert isinstance(expected, torch.Tensor)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    one = client.post("/v1/embeddings", json={"input": "A red square."}).json()
    assert len(one["data"]) == 1
    torch.testing.assert_close(torch.tensor(one["data"][0]["embedding"]), got[0], rtol=0, atol=1e-6)


def test_base64_encoding_and_dimensions(client: TestClient) -> None:
    floats = client.post("/v1/embeddings", json={"input": ["a b", "c"]}).json()["data"]
    packed = client.post(
        "/v1/embeddings", json={"input": ["a b", "c"], "encoding_format": "base64"}
    ).json()["data"]
    for f, p in zip(floats, packed, strict=True):
        decoded = np.frombuffer(base64.b64decode(p["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, f["embedding"], rtol=0, atol=1e-7)
    short = client.post("/v1/embeddings", json={"input": ["a b"], "dimensions": 4}).json()
    vector = torch.tensor(short["data"][0]["embedding"])
    assert vector.shape == (4,)
    torch.testing.assert_close(vector.norm(), torch.tensor(1.0))
    expected = torch.nn.functional.normalize(torch.tensor(floats[0]["embedding"])[:4], dim=0)
    torch.testing.assert_close(vector, expected)


def test_openai_client_request_shapes(client: TestClient, served: Served) -> None:
    """The bodies and headers the OpenAI Python client sends, through its own transport."""
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    name = served.model.directory.name
    result = api.embeddings.create(model=name, input=["A red square.", "A circle."])
    assert len(result.data) == 2 and len(result.data[0].embedding) == served.model.projector.dim
    packed = api.embeddings.create(model=name, input="A red square.")  # base64 by default
    np.testing.assert_allclose(packed.data[0].embedding, result.data[0].embedding, atol=1e-6)
    reply = api.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "Where was object 7 made?"}],
        max_tokens=3,
        extra_body={"retrieval_k": 2},
    )
    assert isinstance(reply.choices[0].message.content, str)
    assert len(reply.model_extra["sources"]) == 2
    stream = api.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Hello?"}], max_tokens=3, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    plain = api.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Hello?"}], max_tokens=3
    )
    assert "".join(pieces) == plain.choices[0].message.content
    assert [m.id for m in api.models.list()] == [name]


def test_chat_with_retrieval_images_and_sampling(client: TestClient, served: Served) -> None:
    world, model = served.world, served.model
    item = world.kb_items[1]
    question = item.segments[0].text
    assert question is not None
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 4,
            "retrieval_k": 2}  # fmt: skip
    reply = client.post("/v1/chat/completions", json=body).json()
    expected = model.ask(question, k=2, index=served.index, max_new_tokens=4)
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == expected.answer
    assert [s["id"] for s in reply["sources"]] == [s["id"] for s in expected.sources]
    assert reply["sources"][0]["payload"] == expected.sources[0]["payload"]
    assert reply["usage"]["prompt_tokens"] > 0
    image = world.captions[0].images[0]
    parts = [{"type": "image_url", "image_url": {"url": data_url(world.root / image)}},
             {"type": "text", "text": "What is this?"}]  # fmt: skip
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": parts}],
            "max_tokens": 3, "temperature": 1.0, "seed": 3}  # fmt: skip
    first = client.post("/v1/chat/completions", json=body).json()
    again = client.post("/v1/chat/completions", json=body).json()
    assert first["sources"] == [] and first["choices"] == again["choices"]  # seeded
    plain = model.generate(
        [Sample("q", [Segment.image_(image), Segment.text_("What is this?")])], world.root,
        max_new_tokens=3, temperature=1.0, seed=3,
    )  # fmt: skip
    assert first["choices"][0]["message"]["content"] == plain[0]


def test_streaming_chat_sends_sources_then_deltas(client: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "Where was object 7 made?"}],
            "max_tokens": 4, "retrieval_k": 1, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(chunks[0]["sources"]) == 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    body["stream"] = False
    del body["stream_options"]
    plain = client.post("/v1/chat/completions", json=body).json()
    assert text == plain["choices"][0]["message"]["content"]


def test_search_and_index_mutation(client: TestClient, served: Served, tmp_path: Path) -> None:
    world, model = served.world, served.model
    item = world.kb_items[1]
    question = item.segments[0].text
    assert question is not None
    hits = client.post("/v1/search", json={"query": question, "k": 3}).json()["data"]
    expected = model.search(question, k=3, index=served.index)
    assert [h["id"] for h in hits] == [h["id"] for h in expected]
    assert hits[0]["metadata"] == expected[0]["metadata"]
    assert hits[0]["score"] == pytest.approx(expected[0]["score"], abs=1e-6)
    with_image = next(s for s in world.kb_items if s.images)
    image = with_image.images[0]
    found = client.post(
        "/v1/search", json={"image": data_url(world.root / image), "k": 2, "include_images": True}
    ).json()["data"]
    assert len(found) == 2 and all("thumbnails" in h for h in found)
    assert any(h["thumbnails"] for h in found if h["metadata"]["segments"][0].get("image"))
    # add (with an image), find it, delete it: each change is on disk, under the lock
    add = {"items": [{"id": "new-1", "text": "A purple hexagon made in Oslo.",
                      "payload": "Object new-1 was made in Oslo."},
                     {"id": "new-2", "image": png_url(), "text": "A red tile."}]}  # fmt: skip
    answer = client.post("/v1/index/add", json=add).json()
    assert answer == {"added": 2, "entries": len(world.kb_items) + 2}
    on_disk = Index.load(tmp_path / "kb")
    assert "new-1" in on_disk and on_disk.get_metadata("new-1")["meta"]["payload"].endswith("Oslo.")
    assert (world.root / on_disk.get_metadata("new-2")["segments"][0]["image"]).is_file()
    top = client.post("/v1/search", json={"query": "A purple hexagon made in Oslo.", "k": 1})
    assert top.json()["data"][0]["id"] == "new-1"
    vector = model.embed(texts=["A purple hexagon made in Oslo."])
    assert top.json()["data"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert isinstance(vector, torch.Tensor)
    duplicate = client.post("/v1/index/add", json={"items": [{"id": "new-1", "text": "x"}]})
    assert duplicate.status_code == 400 and "duplicate id" in duplicate.json()["error"]["message"]
    gone = client.post("/v1/index/delete", json={"ids": ["new-1", "new-2"]}).json()
    assert gone == {"deleted": 2, "entries": len(world.kb_items)}
    assert "new-1" not in Index.load(tmp_path / "kb")
    unknown = client.post("/v1/index/delete", json={"ids": ["nope"]})
    assert unknown.status_code == 400 and "unknown id" in unknown.json()["error"]["message"]
    assert client.get("/v1/index").json()["count"] == len(world.kb_items)


def test_auth(served: Served, tmp_path: Path) -> None:
    settings = ServeSettings(index=own_index(served, tmp_path), api_key="s3cret")
    with TestClient(create_app(served.model, settings)) as client:
        assert client.get("/health").status_code == 200  # open: probes need it
        assert client.get("/").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.post("/v1/embeddings", json={"input": "a"}, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/embeddings", json={"input": "a"}, headers=good).status_code == 200
        assert client.get("/v1/models", headers=good).status_code == 200


def _bad_inputs(served: Served) -> list[tuple[str, str, object, int, str]]:
    """(name, path, body, status, text in the message) for every class of bad input."""
    big = png_url(80, 80)
    long_text = " ".join(["word"] * 100)  # over the limit (64), within the model's (256)
    return [
        ("not json", "/v1/embeddings", b"{", 400, "not valid JSON"),
        ("missing input", "/v1/embeddings", {}, 400, "input"),
        ("unknown field", "/v1/embeddings", {"input": "a", "colour": 1}, 400, "colour"),
        ("empty list", "/v1/embeddings", {"input": []}, 400, "non-empty"),
        ("empty text", "/v1/embeddings", {"input": [""]}, 400, "empty text"),
        ("wrong type", "/v1/embeddings", {"input": [3.5]}, 400, "input[0]"),
        ("token ids", "/v1/embeddings", {"input": [1, 2, 3]}, 400, "token-id"),
        ("bad item key", "/v1/embeddings", {"input": [{"txt": "a"}]}, 400, "txt"),
        ("bad base64", "/v1/embeddings", {"input": [{"image": "###"}]}, 400, "base64"),
        ("not an image", "/v1/embeddings",
         {"input": [{"image": base64.b64encode(b"hello").decode()}]}, 400, "decodable"),
        ("remote url", "/v1/embeddings", {"input": [{"image": "https://x/y.png"}]}, 400,
         "not fetched"),
        ("too many pixels", "/v1/embeddings", {"input": [{"image": big}]}, 413, "pixels"),
        ("too many images", "/v1/embeddings", {"input": [{"image": png_url()}] * 3}, 413,
         "images"),
        ("too many inputs", "/v1/embeddings", {"input": ["a"] * 9}, 413, "inputs"),
        ("too many tokens", "/v1/embeddings", {"input": [long_text]}, 413, "tokens"),
        ("over the context", "/v1/embeddings", {"input": [long_text * 4]}, 413, "tokens"),
        ("wrong model", "/v1/embeddings", {"input": "a", "model": "gpt-4"}, 404, "gpt-4"),
        ("bad format", "/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 400,
         "encoding_format"),
        ("too many dimensions", "/v1/embeddings", {"input": "a", "dimensions": 999}, 400,
         "dimensions"),
        ("body too large", "/v1/embeddings", {"input": "a" * 70_000}, 413, "bytes"),
        ("no messages", "/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("last not user", "/v1/chat/completions",
         {"messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message"),
        ("bad role", "/v1/chat/completions",
         {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ("bad part", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400, "image_url"),
        ("bad image url", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": [
             {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}]}]},
         400, "data URL"),
        ("too many new tokens", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000}, 400,
         "max_tokens"),
        ("bad temperature", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400,
         "temperature"),
        ("n > 1", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
        ("k too large", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "hi"}], "retrieval_k": 1000}, 400, "k="),
        ("empty search", "/v1/search", {"k": 3}, 400, "query"),
        ("k zero", "/v1/search", {"query": "a", "k": 0}, 400, "k"),
        ("empty add", "/v1/index/add", {"items": []}, 400, "items"),
        ("item without content", "/v1/index/add", {"items": [{"id": "x"}]}, 400, "items[0]"),
        ("unknown route", "/v1/nope", {"input": "a"}, 404, "no route"),
        ("lone surrogate in a query", "/v1/search", b'{"query": "a\\ud800b"}', 400,
         "lone surrogate"),
        ("lone surrogate in an input", "/v1/embeddings", b'{"input": ["a", "\\udcff"]}', 400,
         "lone surrogate"),
        ("lone surrogate in a message", "/v1/chat/completions",
         b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "lone surrogate"),
        ("no visible character in an input", "/v1/embeddings", {"input": ["a", "\u200b\xad"]},
         400, "has no visible character"),
        ("no visible character in a query", "/v1/search", {"query": "\u200b"}, 400,
         "has no visible character"),
        ("no visible character in a message", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "\u0301"}]}, 400, "has no visible character"),
    ]  # fmt: skip


def test_every_bad_input_is_a_4xx_json_error(served: Served, tmp_path: Path) -> None:
    limits = Limits(max_request_bytes=65_536, max_inputs=8, max_images=2, max_pixels=64 * 64,
                    max_tokens=64, max_k=50)  # fmt: skip
    settings = ServeSettings(index=own_index(served, tmp_path), limits=limits)
    with TestClient(create_app(served.model, settings)) as client:
        for name, path, body, status, text in _bad_inputs(served):
            if isinstance(body, bytes):
                response = client.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
            else:
                response = client.post(path, json=body)
            assert response.status_code == status, (name, response.text)
            error = response.json()["error"]
            assert text in error["message"], (name, error)
            assert set(error) == {"message", "type", "param", "code"}
            # and the server keeps serving
            assert client.post("/v1/embeddings", json={"input": "ok"}).status_code == 200, name
        assert client.get("/v1/embeddings").status_code == 405


def test_no_index_is_a_clear_409(served: Served) -> None:
    with TestClient(create_app(served.model, ServeSettings())) as client:
        response = client.post("/v1/search", json={"query": "a"})
        assert response.status_code == 409 and "--index" in response.json()["error"]["message"]
        assert (
            client.post("/v1/index/add", json={"items": [{"id": "a", "text": "b"}]}).status_code
            == 409
        )
