"""Mining per instruction (sugar.control.mine) against a naive reference: the same query
vectors ranked by hand, with the false-negative margin and with a negative margin that
trusts complete labels."""

from __future__ import annotations

import pytest
import torch

from sugar.control.branch import ControlBranch
from sugar.control.embed import embed_instructed, read_instructions
from sugar.control.mine import mine_instructed
from sugar.data.instructed import read_instructed
from sugar.embed import embed_vectors
from tests.control.conftest import ControlWorld


@pytest.mark.parametrize("margin", [0.05, 0.0, -2.0])
def test_mined_negatives_match_a_hand_ranking(control_world: ControlWorld, margin: float) -> None:
    root, model = control_world.root, control_world.model
    data = read_instructed(root / "instructed" / "train.jsonl", root)
    projector = control_world.projector
    torch.manual_seed(0)
    branch = ControlBranch(model.hidden_size, joins=2, layers=1, heads=2, join="film")
    for projection in branch.zero:
        torch.nn.init.normal_(projection.weight, std=0.5)
    corpus = embed_vectors(model, projector, data.corpus, root)
    readings = read_instructions(model, data.queries, data.instructions, root)
    mined, summary = mine_instructed(model, projector, branch, data, corpus, root, k=3,
                                     margin=margin, depth=50, readings=readings)  # fmt: skip
    queries = embed_instructed(model, projector, branch, data.queries, data.instructions, root)
    above = 0
    for i, query in enumerate(data.queries):
        scores = (queries[i] @ corpus.T).tolist()
        positives = set(query.meta["positives"])
        best = max(scores[data.row[p]] for p in positives)
        never = set(query.meta.get("exclude", []))
        ranked = sorted(range(len(data.corpus)), key=lambda c: -scores[c])[:50]
        expected = [data.corpus[c].id for c in ranked
                    if data.corpus[c].id not in positives | never
                    and scores[c] <= best - margin][:3]  # fmt: skip
        assert mined[query.id] == expected, query.id
        above += sum(scores[data.row[c]] > best for c in expected)
    assert summary["mined"] == sum(len(v) for v in mined.values()) > 0
    if margin >= 0:
        assert above == 0 and summary["filtered_false_negatives"] > 0
    else:  # -2 drops nothing: the hard negatives ranked above the positive are kept
        assert above > 0 and summary["filtered_false_negatives"] == 0
