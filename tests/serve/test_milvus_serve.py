"""The server over a ``--backend milvus`` index (embedded milvus-lite): a search answers with
the exact index's ids and scores, and an add through the API is saved and found."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sugar.index import Index, build_index
from sugar.serve.app import ServeSettings, create_app
from tests.index.conftest import needs_milvus
from tests.serve.conftest import Served

pytestmark = needs_milvus


def test_search_and_add_on_a_milvus_index(served: Served, tmp_path: Path) -> None:
    world, model = served.world, served.model
    path = tmp_path / "kb"
    index = build_index("milvus", model.projector.dim, model.identity)
    vectors = model.embed(world.kb_items, root=world.root)
    index.add([s.id for s in world.kb_items], vectors, [s.to_dict() for s in world.kb_items])
    index.save(path)
    del index
    question = world.kb_items[1].segments[0].text
    assert question is not None
    expected = model.search(question, k=3, index=served.index)  # the exact index
    settings = ServeSettings(index=path, media=world.root)
    with TestClient(create_app(model, settings)) as client:
        assert client.get("/v1/index").json()["backend"] == "milvus"
        hits = client.post("/v1/search", json={"query": question, "k": 3}).json()["data"]
        assert [h["id"] for h in hits] == [h["id"] for h in expected]
        for got, want in zip(hits, expected, strict=True):
            assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        add = {"items": [{"id": "new-1", "text": "A purple hexagon made in Oslo."}]}
        assert client.post("/v1/index/add", json=add).json()["added"] == 1
        top = client.post("/v1/search", json={"query": "A purple hexagon made in Oslo.", "k": 1})
        assert top.json()["data"][0]["id"] == "new-1"
    reopened = Index.load(path)
    assert reopened.info()["backend"] == "milvus" and "new-1" in reopened
