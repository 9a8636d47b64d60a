"""Evaluation tasks: their logic on a model with known outputs, every task end to end on a tiny
model, user JSONL without world metadata, and the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.data.world import generate_world
from sugar.eval.report import headline_table, write_report
from sugar.eval.tasks import (
    TASKS,
    EvalModel,
    hard_negatives,
    kb_qa,
    pope,
    run_tasks,
    vqa,
    winoground,
    with_fact,
)
from sugar.models.base import prompt_of
from sugar.models.prefix import RetrievalProjector
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.rag import PromptTemplate, build_prompt


class KnownScores(EvalModel):
    """Embeddings and log-likelihoods looked up from tables keyed by content."""

    def __init__(self, vectors: dict[str, list[float]], scores: dict[str, float]) -> None:
        self.vectors, self.scores = vectors, scores

    def embed(self, samples: Sequence[Sample], root: str | Path) -> torch.Tensor:
        keys = [s.segments[0].text or s.segments[0].image or "" for s in samples]
        return torch.tensor([self.vectors[k] for k in keys])

    def score(self, samples: Sequence[Sample], root: str | Path) -> torch.Tensor:
        return torch.tensor([self.scores[s.segments[-1].text or ""] for s in samples])


def test_hard_negative_accuracy_from_known_scores() -> None:
    samples = [
        Sample("a", [Segment.image_("a.png"), Segment.text_("A red cat.", "target")],
               meta={"negatives": [{"kind": "colour", "caption": "A blue cat."}]}),
        Sample("b", [Segment.image_("b.png"), Segment.text_("A big dog.", "target")],
               meta={"negatives": [{"kind": "colour", "caption": "A tiny dog."}]}),
    ]  # fmt: skip
    vectors = {
        "a.png": [1.0, 0.0], "A red cat.": [1.0, 0.0], "A blue cat.": [0.0, 1.0],
        "b.png": [0.0, 1.0], "A big dog.": [1.0, 0.0], "A tiny dog.": [0.0, 1.0],
    }  # fmt: skip
    scores = {"A red cat.": -1.0, "A blue cat.": -2.0, "A big dog.": -3.0, "A tiny dog.": -3.0}
    out = hard_negatives(KnownScores(vectors, scores), samples, Path("."))
    assert out["emb_colour"] == 0.5  # a: 1 > 0 right; b: 0 > 1 wrong
    assert out["ll_colour"] == 0.5  # a: -1 > -2 right; b: a tie fails
    assert out["count_colour"] == 2.0


def test_winoground_from_known_scores() -> None:
    sample = Sample(
        "w", [Segment.image_("i0.png"), Segment.text_("c0", "target")],
        meta={"images": ["i0.png", "i1.png"], "captions": ["c0", "c1"]},
    )  # fmt: skip
    vectors = {"i0.png": [1.0, 0.0], "i1.png": [0.0, 1.0], "c0": [1.0, 0.0], "c1": [0.6, 0.8]}
    out = winoground(KnownScores(vectors, {"c0": -1.0, "c1": -5.0}), [sample], Path("."))
    # s[c, i]: c0 -> (1, 0), c1 -> (0.6, 0.8): text (c0 best for i0, c1 best for i1) holds;
    # image (i0 best for c0: 1 > 0; i1 best for c1: 0.8 > 0.6) holds -> group 1
    assert (out["emb_text"], out["emb_image"], out["emb_group"]) == (1.0, 1.0, 1.0)
    # likelihood ignores the image here: c0 always wins, so text fails and image ties fail
    assert (out["ll_text"], out["ll_image"], out["ll_group"]) == (0.0, 0.0, 0.0)


class KnownAnswers(EvalModel):
    """Generates a fixed answer per sample id (``""`` when not listed); records every prompt."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.prompts = answers, []  # type: list[list[Sample]]
        self.projector, self.name = None, "known"

    def embed(self, samples: Sequence[Sample], root: str | Path) -> None:
        return None

    def generate(self, samples: Sequence[Sample], root: str | Path, tokens: int = 8) -> list[str]:
        self.prompts.append(list(samples))
        return [self.answers.get(s.id, "") for s in samples]


def _probe(id: str, answer: str, kind: str | None) -> Sample:
    segments = [Segment.image_(f"{id}.png"), Segment.text_("Is there a red square in the image?")]
    meta = {"answer": answer, "negative_kind": kind}
    return Sample(id, [*segments, Segment.text_(answer, "target")], "pope", meta)


def test_pope_scores_each_setting_on_its_balanced_set() -> None:
    settings = ("random", "popular", "adversarial")
    probes = [_probe(f"{n}y", "yes", None) for n in (1, 2)]
    probes += [_probe(f"{n}{k[0]}", "no", k) for n in (1, 2) for k in settings]
    said = {"1y": "Yes, there is.", "1r": "no", "1p": "yes", "1a": "yes",
            "2y": "No.", "2r": "No, there is not.", "2p": "no", "2a": "I think so"}  # fmt: skip
    out = pope(KnownAnswers(said), probes, Path("."))
    # each set = 1y (TP) and 2y (FN) plus its two "no":
    # random 1r, 2r TN TN -> acc 3/4, precision 1, recall 1/2, f1 2/3, yes ratio 1/4
    # popular 1p FP, 2p TN -> acc 1/2, precision 1/2, recall 1/2, f1 1/2, yes ratio 2/4
    # adversarial 1a, 2a FP FP -> acc 1/4, precision 1/3, recall 1/2, f1 2/5, yes ratio 3/4
    expected = {
        "random": (0.75, 1.0, 0.5, 2 / 3, 0.25),
        "popular": (0.5, 0.5, 0.5, 0.5, 0.5),
        "adversarial": (0.25, 1 / 3, 0.5, 0.4, 0.75),
    }
    names = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    for setting, values in expected.items():
        for name, value in zip(names, values, strict=True):
            assert out[f"{setting}_{name}"] == pytest.approx(value), (setting, name)
    for index, name in enumerate(names):
        mean = sum(v[index] for v in expected.values()) / 3
        assert out[name] == pytest.approx(mean), name
    assert out["accuracy"] == pytest.approx(0.5) and out["f1"] == pytest.approx(47 / 90)
    # per item: a "yes" is in all 3 sets of 4, a "no" in one: 8/3 * (3/4 or 1/4) per correct
    items = out["per_item"]["accuracy"]
    assert items == pytest.approx([2.0, 0.0, 2 / 3, 0.0, 0.0, 2 / 3, 2 / 3, 0.0])  # 1y 2y 1r..2a
    assert sum(items) / len(items) == pytest.approx(out["accuracy"])


def _question(id: str, answer: str, kind: str | None) -> Sample:
    meta = {"answer": answer} if kind is None else {"answer": answer, "question_type": kind}
    segments = [Segment.image_(f"{id}.png"), Segment.text_("What is it?")]
    return Sample(id, [*segments, Segment.text_(answer, "target")], "vqa", meta)


def test_vqa_exact_match_overall_and_per_question_type() -> None:
    questions = [_question("a", "red", "colour"), _question("b", "2", "count"),
                 _question("c", "blue", "colour"), _question("d", "three", "count"),
                 _question("e", "circle", "shape")]  # fmt: skip
    said = {"a": "Red.", "b": "two", "c": "green", "d": "3", "e": "square"}
    out = vqa(KnownAnswers(said), questions, Path("."))
    # normalised: red = red, two -> 2, green != blue, 3 = three -> 3, square != circle
    assert out["exact_match"] == pytest.approx(3 / 5)
    assert out["per_item"]["exact_match"] == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert (out["exact_match_colour"], out["items_colour"]) == (0.5, 2)
    assert (out["exact_match_count"], out["items_count"]) == (1.0, 2)
    assert (out["exact_match_shape"], out["items_shape"]) == (0.0, 1)
    # a file where some question has no type (user JSONL) gets the overall figure only
    mixed = vqa(KnownAnswers(said), [*questions[:2], _question("f", "red", None)], Path("."))
    assert mixed["exact_match"] == pytest.approx(2 / 3)
    assert not any(k.startswith(("exact_match_", "items_")) for k in mixed)


def test_pope_without_settings_scores_all_probes_at_once() -> None:
    probes = [_probe("a", "yes", None), _probe("b", "no", None), _probe("c", "no", None)]
    out = pope(KnownAnswers({"a": "yes", "b": "yes", "c": "no"}), probes, Path("."))
    assert out["accuracy"] == pytest.approx(2 / 3) and "random_accuracy" not in out
    assert out["per_item"]["accuracy"] == [1.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EvalModel, EvalModel]:
    root = tmp_path_factory.mktemp("eval") / "world"
    generate_world(root, seed=4, train_per_task=24, val_per_task=4, test_per_task=12)
    texts = [s.text for x in read_samples(root / "caption" / "train.jsonl", root)
             for s in x.segments if s.text]  # fmt: skip
    tokenizer = Tokenizer.train(texts, vocab_size=300)
    model = TinyMLLM(tokenizer, width=32, layers=2, heads=2, max_positions=512).eval()
    with_projector = EvalModel(model, RetrievalProjector(32, 8).eval(), name="with")
    without = EvalModel(model, None, name="without")
    return root, with_projector, without


class _EmbedOnly:
    """An evaluation model with embeddings and no language model (as a teacher alone)."""

    generates = False
    name = "embed-only"

    def __init__(self, inner: EvalModel) -> None:
        self.inner = inner

    def embed(self, samples: Any, root: Any) -> Any:
        return self.inner.embed(samples, root)

    def score(self, samples: Any, root: Any) -> None:
        return None

    def generate(self, samples: Any, root: Any, tokens: int = 8) -> None:
        return None


def test_a_model_that_does_not_generate_gets_the_kb_fact_retrieval_only(
    tiny_eval: tuple[Path, EvalModel, EvalModel],
) -> None:
    root, with_projector, _ = tiny_eval
    full = run_tasks(with_projector, root, ["kb_qa"], limit=6)["kb_qa"]
    only = run_tasks(_EmbedOnly(with_projector), root, ["kb_qa", "vqa"], limit=6)
    assert only["vqa"] == {}  # generation tasks: n/a as a whole
    kb = only["kb_qa"]
    assert kb["retrieval_r1"] == full["retrieval_r1"]
    assert not {"no_context", "oracle", "retrieved"} & set(kb)
    assert sum(kb["per_item"]["retrieval_r1"]) / 6 == pytest.approx(kb["retrieval_r1"])


def test_every_task_runs_end_to_end_and_reports_na_without_a_projector(
    tiny_eval: tuple[Path, EvalModel, EvalModel], tmp_path: Path
) -> None:
    root, with_projector, without = tiny_eval
    results = {m.name: run_tasks(m, root, list(TASKS), limit=6) for m in (with_projector, without)}
    for name in ("with", "without"):
        assert set(results[name]) == set(TASKS)
    assert isinstance(results["with"]["caption_retrieval"]["t2i_r1"], float)
    assert results["without"]["caption_retrieval"]["t2i_r1"] == "n/a"
    assert results["without"]["winoground"]["emb_group"] == "n/a"
    assert isinstance(results["without"]["winoground"]["ll_group"], float)  # LM head scores
    assert isinstance(results["without"]["vqa"]["exact_match"], float)
    assert results["without"]["kb_qa"]["retrieved"] == "n/a"
    metrics = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    settings = ("", "random_", "popular_", "adversarial_")
    assert {m for m in results["with"]["pope"] if m not in ("per_item", "items")} == {
        f"{s}{m}" for s in settings for m in metrics
    }
    report = write_report(tmp_path / "report", results, {"seed": 0}, compare=("with", ["without"]))
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["comparisons"]
    compared = {(r["task"], r["metric"]) for r in rows["with - without"]}
    assert ("vqa", "exact_match") in compared and ("winoground", "ll_group") in compared
    assert ("caption_retrieval", "t2i_r1") not in compared  # "without" has no embeddings
    assert all(r["difference"] == 0.0 for r in rows["with - without"])  # same backbone
    text = report.read_text()
    for task in TASKS:
        assert f"### {task}" in text
    assert "n/a" in headline_table(results)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["results"]["without"]["caption_retrieval"]["t2i_r1"] == "n/a"
    assert (tmp_path / "report" / "needle_by_position.png").is_file()


def test_kb_training_samples_have_the_evaluators_oracle_layout(
    tiny_eval: tuple[Path, EvalModel, EvalModel],
) -> None:
    """A training kb sample is, token for token, what kb_qa's oracle condition and RAG's default
    template (k = 1) build from the same question and fact."""
    root, with_projector, _ = tiny_eval
    train = read_samples(root / "kb" / "train.jsonl", root)
    items = read_samples(root / "kb_items" / "train.jsonl", root)
    payload = {it.meta["fact_id"]: it.meta["payload"] for it in items}
    layout = [[g.kind for g in q.segments] for q in read_samples(root / "kb" / "test.jsonl", root)]
    # the question alone: the training sample without its first segment, in the test layout
    questions = [Sample(t.id, t.segments[1:], t.task, t.meta) for t in train]
    assert all([g.kind for g in q.segments] in layout for q in questions)
    recorder = KnownAnswers({})
    kb_qa(recorder, questions, root, items)
    plain, oracle = recorder.prompts  # no projector: no retrieval, two generation calls
    assert [p.segments for p in plain] == [q.segments for q in questions]
    tokenize = with_projector.backbone.collate
    for t, q, o in zip(train, questions, oracle, strict=True):
        assert o.segments == t.segments == with_fact(q, payload[t.meta["fact_id"]]).segments
        rag = build_prompt(q, [payload[t.meta["fact_id"]]], PromptTemplate())
        assert rag.segments == prompt_of(t).segments == prompt_of(o).segments
        assert torch.equal(
            tokenize([prompt_of(t)], root).input_ids, tokenize([rag], root).input_ids
        )


def test_caption_retrieval_on_user_jsonl_without_world_metadata(
    tiny_eval: tuple[Path, EvalModel, EvalModel], tmp_path: Path
) -> None:
    root, with_projector, _ = tiny_eval
    user = tmp_path / "user"
    (user / "caption").mkdir(parents=True)
    world_pairs = read_samples(root / "caption" / "test.jsonl", root)[:5]
    lines = []
    for i, s in enumerate(world_pairs):
        image = user / f"{i}.png"
        image.write_bytes((root / str(s.segments[0].image)).read_bytes())
        plain = Sample(
            f"u{i}", [Segment.image_(image.name), Segment.text_(f"Photo {i}.", "target")]
        )
        lines.append(plain.to_json())
    (user / "caption" / "test.jsonl").write_text("\n".join(lines) + "\n")
    out = run_tasks(with_projector, user, ["caption_retrieval"])
    assert out["caption_retrieval"]["items"] == 5
    assert "heldout_t2i_r1" not in out["caption_retrieval"]  # no world metadata, no such split


@pytest.mark.slow
def test_demo_smoke_through_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "[demo] report:" in result.output
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert set(report["results"]) == {"generative", "sugar", "teacher"}
    assert set(report["meta"]["timings_s"]) == {
        "world",
        "teacher",
        "train align",
        "train base",
        "train and evaluate generative and sugar, side by side",
        "train generative",
        "train sugar",
        "evaluate generative",
        "evaluate sugar",
        "evaluate the teacher alone",
    }  # fmt: skip  (the smoke size runs the optional alignment stage, so it is tested; with
    # the default 2 workers the two fine-tunes run side by side, each evaluated when trained)
    cpu = report["meta"]["cpu_s"]  # the workers' CPU is counted (every run trained in one)
    assert 0 < cpu["workers"] < cpu["total"] == pytest.approx(cpu["user"] + cpu["system"], abs=0.2)
    assert "CPU s (user" in result.output
    assert report["results"]["generative"]["caption_retrieval"]["t2i_r1"] == "n/a"
    assert isinstance(report["results"]["teacher"]["caption_retrieval"]["t2i_r1"], float)
    assert report["results"]["teacher"]["vqa"] == {}  # no language model: every metric n/a


def test_demo_refuses_to_mix_sizes_or_seeds_in_one_directory(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps({"size": "demo", "seed": 0}))
    result = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "holds a demo run" in result.output


def test_eval_names_models_after_their_run_and_refuses_duplicates(
    tiny_eval: tuple[Path, EvalModel, EvalModel], tmp_path: Path
) -> None:
    from sugar.eval.tasks import load_eval_model
    from sugar.models.bundle import save_bundle

    root, model, _ = tiny_eval
    save_bundle(tmp_path / "runA" / "model", model.backbone)
    assert load_eval_model(tmp_path / "runA" / "model").name == "runA"
    result = CliRunner().invoke(
        app,
        ["eval", "--model", str(tmp_path / "runA" / "model"), "--model",
         str(tmp_path / "runA" / "model"), "--data", str(root), "--tasks", "vqa", "--limit", "2",
         "--out", str(tmp_path / "report")],
    )  # fmt: skip
    assert result.exit_code == 2 and "two models are named 'runA'" in result.output


def test_eval_reads_and_fills_a_feature_cache(
    tiny_eval: tuple[Path, EvalModel, EvalModel], tmp_path: Path
) -> None:
    from sugar.models.bundle import save_bundle
    from sugar.models.feature_cache import FeatureCache

    root, model, _ = tiny_eval
    save_bundle(tmp_path / "runA" / "model", model.backbone)
    cache = tmp_path / "cache"
    command = ["eval", "--model", str(tmp_path / "runA" / "model"), "--data", str(root),
               "--tasks", "vqa", "--limit", "3", "--feature-cache", str(cache)]  # fmt: skip
    result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "r1")])
    assert result.exit_code == 0, result.output
    assert len(FeatureCache(cache, model.backbone.vision.cache.identity)) >= 1  # their images
    shards = sorted(cache.rglob("shard-*.safetensors"))
    result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "r2")])
    assert result.exit_code == 0, result.output
    assert sorted(cache.rglob("shard-*.safetensors")) == shards  # read: nothing new to write
    first, second = (
        json.loads((tmp_path / r / "report.json").read_text())["results"]["runA"]["vqa"]
        for r in ("r1", "r2")
    )
    assert first == second


def test_paired_comparison_on_per_item_scores() -> None:
    from sugar.eval.report import paired_comparison

    results = {
        "a": {"vqa": {"exact_match": 1.0, "per_item": {"exact_match": [1.0] * 40}}},
        "b": {"vqa": {"exact_match": 0.0, "per_item": {"exact_match": [0.0] * 40}}},
        "c": {"vqa": {"exact_match": 1.0, "per_item": {"exact_match": [1.0] * 39}}},
    }
    rows = paired_comparison(results, "a", "b", n_resamples=500)
    assert len(rows) == 1 and rows[0]["difference"] == 1.0 and rows[0]["significant"]
    assert paired_comparison(results, "a", "c") == []  # different items: not comparable
    same = paired_comparison(results, "a", "a", n_resamples=500)
    assert same[0]["difference"] == 0.0 and not same[0]["significant"]


def test_the_headline_shows_instructed_retrieval_alone() -> None:
    """A report of the ``instructed`` task alone has headline columns, not an empty table."""
    results = {
        "branch": {"instructed": {"text_mean_r1": 0.158, "control_mean_r1": 0.19}},
        "plain": {"instructed": {"text_mean_r1": 0.16, "control_mean_r1": "n/a"}},
    }
    table = headline_table(results)
    header, _, branch, plain = table.splitlines()
    assert header == "| variant | instructed R@1 (as text) | instructed R@1 (branch) |"
    assert branch == "| branch | 15.8 | **19.0** |"
    assert plain == "| plain | **16.0** | n/a |"


def test_the_headline_shows_editing_in_its_own_percent() -> None:
    """The edit task's metrics are percentages already: shown as they are, not times 100."""
    table = headline_table({"m": {"edit": {"unike_100_mean": 94.0}}})
    assert table.splitlines()[-1] == "| m | 94.0 |"
