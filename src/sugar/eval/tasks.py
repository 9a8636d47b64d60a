"""Evaluation tasks on the built-in world (and, where no world metadata is needed, user JSONL).

Shapes: N items, P projector width.

Every task takes an :class:`EvalModel` (a backbone, and the retrieval projector when one was
trained) and a split's JSONL, and returns ``{metric: value}``; a metric a model cannot produce is
the string ``"n/a"``, never 0 (a generative-only model has no embeddings; a contrastive-only
model has no LM head). Scoring (METHOD.md section 7): embedding cosine wherever a projector
exists, and caption log-likelihood under the LM for every model with an LM head.

Tasks: ``caption_retrieval`` (text->image, image->text R@1/R@5; held-out attribute combinations
separately), ``hard_negatives`` (pairwise accuracy per negative kind, both scorings),
``winoground`` (text/image/group, both scorings), ``story_retrieval`` (the 5th image from 5
captions, and from 5 captions + 4 images; pool = all 5th images of the split), ``needle``
(answer accuracy per needle position), ``vqa`` (exact match), ``pope`` (accuracy, F1, yes
ratio per setting on its balanced set, and their means over the settings), ``kb_qa`` (answer
accuracy with no context, with the retrieved fact, with the oracle fact; retrieval R@1 of the
needed fact), ``grounding`` (caption NLL with the right vs a shuffled image, image cosine after
the projector: does the model use its images?), ``edit`` (knowledge editing, MMEdit's metrics
after sequential edits, every editor: :mod:`sugar.eval.editing`), ``instructed`` (R@1 /
nDCG@10 per intent without the instruction, with it as text and through the control branch:
:mod:`sugar.eval.instructed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from sugar.control.branch import ControlBranch
from sugar.control.bundle import control_from_extras
from sugar.data.jsonl import read_samples
from sugar.data.prompt import with_references
from sugar.data.schema import Sample, Segment
from sugar.edit.store import load_editor
from sugar.embed import embed_vectors
from sugar.eval.editing import edit_task
from sugar.eval.grounding import caption_pairs, grounding, image_gallery
from sugar.eval.instructed import instructed_retrieval
from sugar.eval.metrics import (
    normalize_answer,
    pairwise_accuracy,
    pope_metrics,
    pope_says_yes,
    recall_at_k,
    recall_at_k_items,
    vqa_item_scores,
    winoground_item_scores,
    winoground_scores,
)
from sugar.models.base import MLLM
from sugar.models.bundle import load_bundle
from sugar.models.prefix import RetrievalProjector, projector_from_extras

__all__ = [
    "GENERATION_TASKS",
    "TASKS",
    "EvalModel",
    "Evaluable",
    "absent_task_files",
    "load_eval_model",
    "run_tasks",
    "task_files",
    "unscorable_tasks",
]

NA = "n/a"
Value = float | str


class Evaluable(Protocol):
    """What the tasks need of a model: an :class:`EvalModel`, or a teacher alone
    (:class:`sugar.teachers.sensitivity.TeacherEvalModel`). ``None`` from a method means the
    model cannot do it (no projector, no language model); the task reports "n/a"."""

    name: str
    generates: bool
    """False: the generation tasks (:data:`GENERATION_TASKS`) are "n/a" as a whole."""

    def embed(self, samples: Sequence[Sample], root: str | Path) -> Tensor | None: ...
    def score(self, samples: Sequence[Sample], root: str | Path) -> Tensor | None: ...
    def generate(
        self, samples: Sequence[Sample], root: str | Path, tokens: int = 8
    ) -> list[str] | None: ...


@dataclass
class EvalModel:
    """A trained backbone (and its retrieval projector, when one was trained) for the tasks.

    Not :class:`sugar.api.SugarModel`: the tasks need only the :class:`Evaluable` methods, a
    batch size and a report name, and build it from a bundle or from a model still in memory
    (the training loop's validation); the API wrapper owns a bundle on disk and its options.
    """

    generates = True
    backbone: MLLM
    projector: RetrievalProjector | None
    image_pool: Literal["mean", "last"] = "mean"
    name: str = "model"
    batch_size: int = 32
    control: ControlBranch | None = None
    """The bundle's control branch (``sugar train-control``), used by the ``instructed`` task
    only: every other task embeds without instruction, as the base model does."""

    def embed(self, samples: Sequence[Sample], root: str | Path) -> Tensor | None:
        """(N, P) unit vectors, or None without a projector."""
        if self.projector is None:
            return None
        return embed_vectors(
            self.backbone, self.projector, samples, root, batch_size=self.batch_size,
            image_pool=self.image_pool,
        )  # fmt: skip

    def score(self, samples: Sequence[Sample], root: str | Path) -> Tensor:
        """(N,) log-likelihood of each sample's target text."""
        parts = [
            self.backbone.score(samples[i : i + self.batch_size], root)
            for i in range(0, len(samples), self.batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    def mteb_meta(self) -> dict[str, Any]:
        """This model's MTEB ``model_meta.json`` (:func:`sugar.eval.mteb.model_meta`)."""
        from sugar.eval.mteb import model_meta

        n_parameters = sum(p.numel() for p in self.backbone.parameters())
        embed_dim = self.projector.dim if self.projector is not None else None
        return model_meta(self.name, self.backbone.identity, n_parameters, embed_dim)

    def generate(self, samples: Sequence[Sample], root: str | Path, tokens: int = 8) -> list[str]:
        out: list[str] = []
        for i in range(0, len(samples), self.batch_size):
            chunk = samples[i : i + self.batch_size]
            out += self.backbone.generate(chunk, root, max_new_tokens=tokens)
        return out


def load_eval_model(
    directory: str | Path, name: str | None = None, feature_cache: str | None = None
) -> EvalModel:
    """A bundle as an :class:`EvalModel` (its projector when it has one), named ``name`` or
    after its directory (the run's name for ``RUN/model`` and ``RUN/best``); ``feature_cache``
    as in :func:`~sugar.models.bundle.load_bundle`."""
    bundle = load_bundle(directory, feature_cache=feature_cache)
    editor = load_editor(bundle)  # an edited bundle is evaluated with its edits (sugar.edit)
    if editor is not None and editor.method == "context":
        raise ValueError(f"{directory}: in-context edits rewrite prompts, which the tasks do not")
    projector, image_pool = projector_from_extras(bundle.extras, bundle.extra_specs, str(directory))
    path = Path(directory).resolve()
    default = path.parent.name if path.name in ("model", "best") else path.name
    control = control_from_extras(bundle.extras, bundle.extra_specs, str(directory))
    return EvalModel(bundle.model.eval(), projector, image_pool, name or default, control=control)


def _items(out: dict[str, Any], metric: str, values: Tensor) -> None:
    """Record per-item scores of ``metric`` (floats in item order whose mean is the metric: 0/1,
    or weighted for POPE's mean over settings) under ``out["per_item"]``: the paired bootstrap
    of :mod:`sugar.eval.report` compares variants item by item."""
    out.setdefault("per_item", {})[metric] = values.float().tolist()


def _image(path: str) -> Sample:
    return Sample(f"image:{path}", [Segment.image_(path)])


def _text(text: str) -> Sample:
    return Sample(f"text:{text[:40]}", [Segment.text_(text)])


def _captioned(image: str, caption: str) -> Sample:
    return Sample(f"pair:{image}", [Segment.image_(image), Segment.text_(caption, "target")])


def caption_retrieval(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """R@1 / R@5 text->image and image->text among the split's caption pairs (all, and the
    held-out attribute combinations alone, ``heldout_*``, when the world marks them).

    The COCO / Flickr30k protocol (Karpathy & Fei-Fei 2015), for sets with several captions per
    image: the gallery is the distinct image paths, in first-seen order
    (:func:`~sugar.eval.grounding.image_gallery`). text->image: each caption queries the
    gallery, its own image relevant. image->text: each distinct image queries every caption,
    any caption paired with it relevant. R@k is "n/a" when there are fewer than k candidates.
    Per-item R@1 scores (for the paired bootstrap): ``t2i_r1`` per caption, ``i2t_r1`` per
    distinct image, both in first-seen order; an item is a hit when its top-scoring candidate
    (the first, among equal scores) is relevant. Where every path is distinct (the built-in
    world) the gallery is the captions' images, one each.
    """
    out: dict[str, Any] = {}
    groups = {"": list(samples)}
    heldout = [s for s in samples if s.meta.get("heldout_combo") in (True, "True")]
    if heldout:
        groups["heldout_"] = heldout
    for prefix, group in groups.items():
        pairs = caption_pairs(group)
        gallery, owner = image_gallery([image for image, _ in pairs])
        images = model.embed([_image(i) for i in gallery], root)  # (I, P), I distinct images
        texts = model.embed([_text(t) for _, t in pairs], root)  # (N, P), N captions
        own = torch.tensor(owner, dtype=torch.long)  # (N,) caption -> its image
        captions_of = torch.arange(len(gallery))[:, None] == own[None, :]  # (I, N) relevance
        for k in (1, 5):
            t2i, i2t = f"{prefix}t2i_r{k}", f"{prefix}i2t_r{k}"
            if images is None or texts is None:
                out[t2i] = out[i2t] = NA
                continue
            t2i_scores, i2t_scores = texts @ images.T, images @ texts.T  # (N, I), (I, N)
            out[t2i] = recall_at_k(t2i_scores, own, k) if len(gallery) >= k else NA
            out[i2t] = recall_at_k(i2t_scores, captions_of, k) if len(pairs) >= k else NA
            if prefix == "" and k == 1 and pairs:
                # the figures' own pessimistic hits, so each list averages to its figure
                _items(out, "t2i_r1", torch.from_numpy(recall_at_k_items(t2i_scores, own, 1)))
                i2t_hits = recall_at_k_items(i2t_scores, captions_of, 1)
                _items(out, "i2t_r1", torch.from_numpy(i2t_hits))
    return out


def hard_negatives(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """Pairwise accuracy per negative kind: image vs (caption, its negative), by embedding
    cosine (``emb_<kind>``) and by caption log-likelihood given the image (``ll_<kind>``)."""
    by_kind: dict[str, list[tuple[str, str, str]]] = {}
    for s in samples:
        image, caption = s.segments[0].image, s.segments[-1].text
        for negative in s.meta.get("negatives", []):
            assert image is not None and caption is not None
            by_kind.setdefault(negative["kind"], []).append((image, caption, negative["caption"]))
    out: dict[str, Any] = {}
    for kind, items in sorted(by_kind.items()):
        images = model.embed([_image(i) for i, _, _ in items], root)
        positives = model.embed([_text(c) for _, c, _ in items], root)
        negatives = model.embed([_text(n) for _, _, n in items], root)
        if images is None or positives is None or negatives is None:
            out[f"emb_{kind}"] = NA
        else:
            emb_pos, emb_neg = (images * positives).sum(-1), (images * negatives).sum(-1)
            out[f"emb_{kind}"] = pairwise_accuracy(emb_pos.numpy(), emb_neg.numpy())
            _items(out, f"emb_{kind}", emb_pos > emb_neg)
        pos = model.score([_captioned(i, c) for i, c, _ in items], root)
        neg = model.score([_captioned(i, n) for i, _, n in items], root)
        if pos is None or neg is None:
            out[f"ll_{kind}"] = NA
        else:
            out[f"ll_{kind}"] = pairwise_accuracy(pos.numpy(), neg.numpy())
            _items(out, f"ll_{kind}", pos > neg)
        out[f"count_{kind}"] = float(len(items))
    return out


def winoground(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """Winoground text / image / group scores by embedding (``emb_*``) and likelihood (``ll_*``)."""
    images = [s.meta["images"] for s in samples]
    captions = [s.meta["captions"] for s in samples]
    out: dict[str, Any] = {}
    flat_images = [i for pair in images for i in pair]
    flat_captions = [c for pair in captions for c in pair]
    img = model.embed([_image(i) for i in flat_images], root)
    txt = model.embed([_text(c) for c in flat_captions], root)
    if img is None or txt is None:
        out.update({"emb_text": NA, "emb_image": NA, "emb_group": NA})
    else:
        i2 = img.view(len(samples), 2, -1)
        t2 = txt.view(len(samples), 2, -1)
        scores = torch.einsum("ncp,nip->nci", t2, i2)  # s[n, caption, image]
        out.update({f"emb_{k}": v for k, v in winoground_scores(scores.numpy()).items()})
        _items(out, "emb_group", torch.as_tensor(winoground_item_scores(scores.numpy())["group"]))
    pairs = [
        _captioned(images[n][i], captions[n][c])
        for n in range(len(samples))
        for c in range(2)
        for i in range(2)
    ]
    scored = model.score(pairs, root)
    if scored is None:
        out.update({"ll_text": NA, "ll_image": NA, "ll_group": NA})
        return out
    ll = scored.view(len(samples), 2, 2)  # s[n, caption, image]
    out.update({f"ll_{k}": v for k, v in winoground_scores(ll.numpy()).items()})
    _items(out, "ll_group", torch.as_tensor(winoground_item_scores(ll.numpy())["group"]))
    return out


def story_retrieval(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """The story's 5th image among all 5th images of the split, queried by its 5 captions
    (``c5``) or its 5 captions and 4 images (``c5i4``)."""
    targets = [s.meta["target_image"] for s in samples]
    pool = model.embed([_image(t) for t in targets], root)
    queries = {
        "c5": [Sample(s.id, [seg for seg in s.segments if seg.kind == "text"]) for s in samples],
        "c5i4": list(samples),
    }
    out: dict[str, Any] = {}
    for name, query in queries.items():
        emb = model.embed(query, root)
        for k in (1, 5):
            key = f"{name}_r{k}"
            if pool is None or emb is None or len(samples) < k:
                out[key] = NA
            else:
                out[key] = recall_at_k(emb @ pool.T, torch.arange(len(samples)), k)
                if k == 1:
                    hits = recall_at_k_items(emb @ pool.T, torch.arange(len(samples)), 1)
                    _items(out, key, torch.from_numpy(hits))
    return out


def _answer_metric(
    out: dict[str, Any], metric: str, predictions: Sequence[str], answers: Sequence[str]
) -> Tensor:
    """Record ``metric``, the share of answers matched by :func:`vqa_item_scores`, and its
    per-item scores in ``out``; return those scores, 1.0 / 0.0 in float64 (so that the mean is
    exactly ``hits / items``)."""
    correct = torch.from_numpy(vqa_item_scores(predictions, answers)).double()
    out[metric] = correct.mean().item()
    _items(out, metric, correct)
    return correct


def _generated(model: Evaluable, samples: Sequence[Sample], root: Path) -> list[str]:
    """The model's answers; :func:`run_tasks` never gives a generation task a model that does
    not generate."""
    answers = model.generate(samples, root)
    if answers is None:
        raise ValueError(f"model {model.name!r} does not generate")
    return answers


def needle(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """Answer accuracy overall and per needle position, and the spread (max - min) over
    positions."""
    predictions = _generated(model, samples, root)
    out: dict[str, Any] = {}
    correct = _answer_metric(out, "accuracy", predictions, [s.meta["answer"] for s in samples])
    by_position: dict[str, list[bool]] = {}
    for s, ok in zip(samples, correct.bool().tolist(), strict=True):
        by_position.setdefault(str(s.meta["needle_position"]), []).append(ok)
    per = {p: sum(v) / len(v) for p, v in sorted(by_position.items())}
    out.update({f"position_{p}": v for p, v in per.items()})
    out["position_spread"] = max(per.values()) - min(per.values())
    return out


def vqa(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """Exact match of the generated answer (normalised) against the target text; where every
    sample's meta names a ``question_type`` (the built-in world's colour, shape, count and
    relation), also ``exact_match_<type>`` and ``items_<type>`` per type, sorted by type."""
    predictions = _generated(model, samples, root)
    out: dict[str, Any] = {}
    correct = _answer_metric(out, "exact_match", predictions, [s.meta["answer"] for s in samples])
    found = [s.meta.get("question_type") for s in samples]
    types = [t for t in found if isinstance(t, str) and t]
    if len(types) == len(found):
        for kind in sorted(set(types)):
            members = torch.tensor([t == kind for t in types])
            out[f"exact_match_{kind}"] = correct[members].mean().item()
            out[f"items_{kind}"] = int(members.sum())
    return out


def pope(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """POPE as its paper reports it (Li et al. 2023): per setting, on its balanced set.

    A setting (``random``, ``popular``, ``adversarial``: meta ``negative_kind`` of its "no"
    probes) is scored on every "yes" probe plus its own "no" probes with :func:`pope_metrics`
    (answers read by the POPE reference rule, :func:`pope_says_yes`): ``<setting>_accuracy``,
    ``_precision``, ``_recall``, ``_f1``, ``_yes_ratio``. The unprefixed ``accuracy``,
    ``precision``, ``recall``, ``f1`` and ``yes_ratio`` are their means over the settings.

    Per-item scores of ``accuracy`` (for the paired bootstrap) weight each probe by the sets it
    is in, so that their mean is the mean accuracy: with N probes, S settings and n_s probes in
    set s, a probe scores ``correct * N / S * sum(1 / n_s over its sets)`` (a "yes" probe is in
    every set). Probes without settings (user JSONL, or a "no" without ``negative_kind``): the
    metrics over all probes, per-item scores 0/1.
    """
    predictions = _generated(model, samples, root)
    labels = [s.meta["answer"] for s in samples]
    yes = [normalize_answer(a) == "yes" for a in labels]
    kinds = [None if y else s.meta.get("negative_kind") for s, y in zip(samples, yes, strict=True)]
    correct = torch.tensor([pope_says_yes(p) == y for p, y in zip(predictions, yes, strict=True)])
    settings = list(dict.fromkeys(k for k in kinds if k is not None))  # first-seen order
    if not settings or any(k is None and not y for k, y in zip(kinds, yes, strict=True)):
        out: dict[str, Any] = dict(pope_metrics(predictions, labels))
        _items(out, "accuracy", correct)
        return out
    per_setting: dict[str, dict[str, float]] = {}
    weight = torch.zeros(len(samples))
    for setting in settings:
        members = [i for i, (k, y) in enumerate(zip(kinds, yes, strict=True)) if y or k == setting]
        per_setting[setting] = pope_metrics(
            [predictions[i] for i in members], [labels[i] for i in members]
        )
        weight[members] += 1.0 / len(members)
    out = {
        name: sum(m[name] for m in per_setting.values()) / len(settings)
        for name in next(iter(per_setting.values()))
    }
    for setting, metrics in per_setting.items():
        out.update({f"{setting}_{name}": value for name, value in metrics.items()})
    _items(out, "accuracy", correct.float() * weight * (len(samples) / len(settings)))
    return out


def with_fact(sample: Sample, payload: str) -> Sample:
    """``sample`` (a knowledge-base question) with the fact ``payload`` shown before it: the
    layout :func:`sugar.data.prompt.with_references` gives the world's training samples and
    :func:`sugar.rag.build_prompt` (default template, one item) gives ``sugar ask``."""
    return with_references(sample, payload)


def kb_qa(
    model: Evaluable, samples: Sequence[Sample], root: Path, items: Sequence[Sample]
) -> dict[str, Any]:
    """Knowledge-base QA: answer accuracy with no context, with the top-1 retrieved fact's
    payload and with the oracle payload, and retrieval R@1 of the needed fact.

    A payload enters as :func:`with_fact` puts it, the layout of the world's training samples and
    of :mod:`sugar.rag`'s default template (the fact, then the question); items are retrieved by
    their key (their image and a record text naming the same object or code in other words),
    never by the payload. The query is the question's context segments. A model that does not
    generate (a teacher alone) gets the retrieval R@1 only.
    """
    payload = {it.meta["fact_id"]: it.meta["payload"] for it in items}
    answers = [s.meta["answer"] for s in samples]
    out: dict[str, Any] = {}
    if model.generates:
        plain = _generated(model, samples, root)
        _answer_metric(out, "no_context", plain, answers)
        facts = [with_fact(s, payload[s.meta["fact_id"]]) for s in samples]
        oracle = _generated(model, facts, root)
        _answer_metric(out, "oracle", oracle, answers)
    keys = model.embed(list(items), root)
    queries = model.embed(
        [Sample(s.id, [g for g in s.segments if g.role == "context"]) for s in samples], root
    )
    if keys is None or queries is None:
        out["retrieved"] = out["retrieval_r1"] = NA
        return out
    ids = [it.meta["fact_id"] for it in items]
    relevant = torch.tensor([ids.index(s.meta["fact_id"]) for s in samples])
    scores = queries @ keys.T
    out["retrieval_r1"] = recall_at_k(scores, relevant, 1)
    best = scores.argmax(dim=1)  # the fact generation reads
    _items(out, "retrieval_r1", torch.from_numpy(recall_at_k_items(scores, relevant, 1)))
    if not model.generates:
        return out
    top = best.tolist()
    retrieved = _generated(
        model, [with_fact(s, payload[ids[t]]) for s, t in zip(samples, top, strict=True)], root
    )
    _answer_metric(out, "retrieved", retrieved, answers)
    return out


def image_grounding(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """Caption NLL with the right vs a shuffled image, and the cosine between different
    images after the projector (:func:`sugar.eval.grounding.grounding`); "n/a" for a model
    without a language model (a teacher alone)."""
    if not isinstance(model, EvalModel):
        return {}
    return dict(grounding(model.backbone, samples, root, batch_size=model.batch_size))


def instructed(model: Evaluable, samples: Sequence[Sample], root: Path) -> dict[str, Any]:
    """Instructed retrieval (:func:`sugar.eval.instructed.instructed_retrieval`); nothing for
    a teacher alone."""
    if not isinstance(model, EvalModel):
        return {}
    return instructed_retrieval(
        model.backbone, model.projector, model.control, samples, root,
        image_pool=model.image_pool, batch_size=model.batch_size,
    )  # fmt: skip


TaskFn = Callable[[Evaluable, Sequence[Sample], Path], dict[str, Value]]
TASKS: dict[str, str] = {
    "caption_retrieval": "caption",
    "hard_negatives": "caption",
    "winoground": "winoground",
    "story_retrieval": "story",
    "needle": "needle",
    "vqa": "vqa",
    "pope": "pope",
    "kb_qa": "kb",
    "grounding": "caption",
    "instructed": "instructed",
}
"""Task name -> the world folder its split's JSONL lives in."""
OPTIONAL_TASKS: dict[str, str] = {"edit": "edit"}
"""Tasks run only when named (their data is not part of every world: ``sugar data edits``)."""
TASK_FOLDERS = {**TASKS, **OPTIONAL_TASKS}
GENERATION_TASKS = ("needle", "vqa", "pope", "grounding", "edit")
"""Tasks scored on generated answers: "n/a" as a whole for a model that does not generate
(``kb_qa`` scores such a model's fact retrieval only)."""
_FUNCTIONS: dict[str, TaskFn] = {
    "caption_retrieval": caption_retrieval,
    "hard_negatives": hard_negatives,
    "winoground": winoground,
    "story_retrieval": story_retrieval,
    "needle": needle,
    "vqa": vqa,
    "pope": pope,
    "grounding": image_grounding,
    "edit": edit_task,
    "instructed": instructed,
}


def task_files(root: str | Path, task: str, split: str = "test") -> list[Path]:
    """The JSONL files ``task`` reads under ``root`` for ``split``: ``root/<folder>/<split>.jsonl``
    (folder: :data:`TASK_FOLDERS`), and for ``kb_qa`` also ``root/kb_items/<split>.jsonl``."""
    root = Path(root)
    if task not in TASK_FOLDERS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASK_FOLDERS)}")
    files = [root / TASK_FOLDERS[task] / f"{split}.jsonl"]
    if task == "kb_qa":
        files.append(root / "kb_items" / f"{split}.jsonl")
    return files


def absent_task_files(
    root: str | Path, tasks: Sequence[str], split: str = "test"
) -> dict[str, list[Path]]:
    """``{task: its absent files}`` (:func:`task_files` that are not files) for each of
    ``tasks`` that lacks any, in the order of ``tasks``; empty when every task can run."""
    absent = {t: [f for f in task_files(root, t, split) if not f.is_file()] for t in tasks}
    return {task: files for task, files in absent.items() if files}


def _without_negatives(root: Path, split: str, limit: int | None = None) -> Path | None:
    """The hard-negative file of ``split`` when none of its first ``limit`` samples (all by
    default) has ``meta.negatives``; None when one has, or the file is absent."""
    path = root / TASK_FOLDERS["hard_negatives"] / f"{split}.jsonl"
    if not path.is_file():
        return None
    samples = read_samples(path, root, check_images=False)[:limit]
    return None if any(s.meta.get("negatives") for s in samples) else path


def unscorable_tasks(root: str | Path, tasks: Sequence[str], split: str = "test") -> dict[str, str]:
    """``{task: why}`` for each of ``tasks`` whose file is there but holds nothing the task
    scores, in the order of ``tasks``: ``hard_negatives`` on captions without
    ``meta.negatives`` (a user's caption set; the world states them, ``sugar mine`` adds mined
    ones). Absent files are :func:`absent_task_files`' concern and are not read here."""
    out = {}
    if "hard_negatives" in tasks and (path := _without_negatives(Path(root), split)) is not None:
        out["hard_negatives"] = f"no sample of {path} has meta.negatives (sugar mine adds them)"
    return out


def run_tasks(
    model: Evaluable,
    root: str | Path,
    tasks: Sequence[str],
    split: str = "test",
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``tasks`` on ``root/<folder>/<split>.jsonl`` (the first ``limit`` items of each).

    Raises ``ValueError`` for an unknown task, ``FileNotFoundError`` naming every absent
    file and its task (:func:`absent_task_files`), and ``ValueError`` naming the file when
    ``hard_negatives`` has no ``meta.negatives`` to score (:func:`unscorable_tasks`), all before
    running any; to run what a dataset holds, leave out the tasks those two functions return
    (as ``sugar eval`` does with its default task list).
    """
    root = Path(root)
    unknown = [t for t in tasks if t not in TASK_FOLDERS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; known: {sorted(TASK_FOLDERS)}")
    absent = absent_task_files(root, tasks, split)
    if absent:
        listed = "; ".join(f"{f} (task {t!r})" for t, files in absent.items() for f in files)
        raise FileNotFoundError(f"no such file: {listed}")
    # before any task runs, as for absent files
    if "hard_negatives" in tasks and (path := _without_negatives(root, split, limit)) is not None:
        first = f" of the first {limit}" if limit is not None else ""
        raise ValueError(
            f"{path}: no sample{first} has meta.negatives, which hard_negatives scores "
            "(sugar mine adds them)"
        )
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if progress is not None:
            progress(task)
        samples = read_samples(root / TASK_FOLDERS[task] / f"{split}.jsonl", root)[:limit]
        if not samples:
            raise ValueError(f"{root / TASK_FOLDERS[task] / f'{split}.jsonl'}: no samples")
        if task in GENERATION_TASKS and not model.generates:
            results[task] = {}  # every metric "n/a" (tables show a missing metric as n/a)
            continue
        with torch.no_grad():
            if task == "kb_qa":
                items = read_samples(root / "kb_items" / f"{split}.jsonl", root)
                results[task] = kb_qa(model, samples, root, items)
            else:
                results[task] = _FUNCTIONS[task](model, samples, root)
        results[task]["items"] = len(samples)
    return results
