"""Evaluation metrics: retrieval, Winoground, pairwise accuracy, VQA, POPE, paired bootstrap.

Pure functions: array-likes in, Python floats (or dicts of them) out. No global state.

Conventions shared by the functions below:

* Scores are "higher = better" and must not contain NaN (``ValueError`` otherwise).
* Every comparison that decides correctness is *strict*; a tie never counts as a success.
  For retrieval this is the *pessimistic rank*: a relevant candidate tied with an irrelevant
  one is ranked below it, so a constant scorer gets the worst possible rank.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

# --------------------------------------------------------------------------------------------
# retrieval (Recall@K and MRR as used for image-text retrieval, e.g. Radford et al. 2021, CLIP)
# --------------------------------------------------------------------------------------------


def _scores_2d(scores: ArrayLike) -> NDArray[np.float64]:
    if isinstance(scores, torch.Tensor):  # on any device, in any dtype
        scores = scores.detach().to("cpu", torch.float64).numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (queries, candidates), got shape {s.shape}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be non-empty, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"scores contains NaN at index {tuple(np.argwhere(np.isnan(s))[0])}")
    return s


def _relevance(relevant: ArrayLike, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Boolean (Q, C) relevance from a (Q, C) bool/0-1 matrix or a (Q,) positive-index array."""
    r = np.asarray(relevant)
    q, c = shape
    if r.ndim == 1 and r.dtype.kind in "iu":
        if r.shape[0] != q:
            raise ValueError(f"relevant has shape {r.shape}, expected ({q},) for scores {shape}")
        bad = (r < 0) | (r >= c)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"relevant[{i}] = {int(r[i])} is not a candidate index in [0, {c})")
        m = np.zeros(shape, dtype=bool)
        m[np.arange(q), r] = True
        return m
    if r.ndim == 2:
        if r.shape != shape:
            raise ValueError(f"relevant has shape {r.shape}, expected {shape} to match scores")
        if r.dtype.kind != "b" and not (r.dtype.kind in "iu" and np.isin(r, (0, 1)).all()):
            raise ValueError(f"relevant matrix must be boolean (or 0/1), got dtype {r.dtype}")
        return r.astype(bool)
    raise ValueError(
        f"relevant must be a boolean (Q, C) matrix or an integer (Q,) index array, "
        f"got shape {r.shape} and dtype {r.dtype}"
    )


def _first_relevant_rank(
    s: NDArray[np.float64], rel: NDArray[np.bool_], what: str = "query"
) -> NDArray[np.int64]:
    """1-based pessimistic rank of the best relevant item in each row of ``s``."""
    empty = ~rel.any(axis=1)
    if empty.any():
        raise ValueError(f"relevant: {what} {int(np.argmax(empty))} has no relevant item")
    best = np.where(rel, s, -np.inf).max(axis=1)
    ahead = (~rel) & (s >= best[:, None])  # irrelevant items scoring >= the best relevant one
    return (1 + ahead.sum(axis=1)).astype(np.int64)


def _check_k(k: int, n: int, what: str = "candidates") -> None:
    if k < 1 or k > n:
        raise ValueError(f"k must be in [1, {n}] (number of {what}), got k={k}")


def recall_at_k(scores: ArrayLike, relevant: ArrayLike, k: int) -> float:
    """Fraction of queries with at least one relevant candidate among the top ``k``.

    ``scores`` has shape (Q, C), higher = better. ``relevant`` is a boolean (Q, C) matrix or an
    integer (Q,) array with the positive candidate index of each query. Ranking is pessimistic:
    rank = 1 + #{irrelevant candidates with score >= the best relevant score}, so ties with
    irrelevant candidates count against the query; a query is a hit when rank <= k.
    Raises ``ValueError`` for non-2-D/NaN scores, shape mismatch, a query without a relevant
    candidate, or k outside [1, C].

    >>> recall_at_k([[0.9, 0.1], [0.8, 0.3]], [0, 1], k=1)
    0.5
    """
    return float(np.mean(recall_at_k_items(scores, relevant, k)))


def recall_at_k_items(scores: ArrayLike, relevant: ArrayLike, k: int) -> NDArray[np.bool_]:
    """Per-query hits behind :func:`recall_at_k` (the same pessimistic ranking), so a per-item
    list averages to the figure even where scores tie. # (Q,)

    >>> recall_at_k_items([[0.5, 0.5], [0.8, 0.3]], [0, 0], k=1).tolist()
    [False, True]
    """
    s = _scores_2d(scores)
    _check_k(k, s.shape[1])
    return _first_relevant_rank(s, _relevance(relevant, s.shape)) <= k


def ndcg_at_k_items(scores: ArrayLike, relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-query binary-relevance nDCG@k (Jarvelin & Kekalainen 2002). # (Q,)

    DCG = sum over the top ``k`` ranks i (1-based) of rel_i / log2(i + 1); the ideal DCG puts
    all relevant candidates first. Ties are broken pessimistically (an irrelevant candidate
    ranks before a relevant one of equal score). Same inputs and errors as :func:`recall_at_k`.

    >>> ndcg_at_k_items([[0.9, 0.8, 0.1]], [[False, True, True]], k=2).round(4).tolist()
    [0.3869]
    """
    s = _scores_2d(scores)
    _check_k(k, s.shape[1])
    rel = _relevance(relevant, s.shape)
    if (~rel.any(axis=1)).any():
        raise ValueError(f"relevant: query {int(np.argmax(~rel.any(axis=1)))} has no relevant item")
    discount = 1.0 / np.log2(np.arange(2, k + 2))  # (k,)
    out = np.empty(s.shape[0])
    for q in range(s.shape[0]):
        order = np.lexsort((rel[q].astype(int), -s[q]))[:k]  # score desc, irrelevant first
        ideal = discount[: min(k, int(rel[q].sum()))].sum()
        out[q] = float((rel[q][order] * discount[: len(order)]).sum() / ideal)
    return out


def ndcg_at_k(scores: ArrayLike, relevant: ArrayLike, k: int) -> float:
    """Mean of :func:`ndcg_at_k_items`.

    >>> ndcg_at_k([[0.9, 0.8], [0.1, 0.7]], [0, 1], k=2)
    1.0
    """
    return float(ndcg_at_k_items(scores, relevant, k).mean())


def mean_reciprocal_rank(scores: ArrayLike, relevant: ArrayLike) -> float:
    """Mean over queries of 1 / rank of the first relevant candidate (rank is 1-based).

    Same inputs, pessimistic tie rule and errors as :func:`recall_at_k`.

    >>> mean_reciprocal_rank([[0.9, 0.1], [0.8, 0.3]], [0, 1])
    0.75
    """
    s = _scores_2d(scores)
    return float(np.mean(1.0 / _first_relevant_rank(s, _relevance(relevant, s.shape))))


def retrieval_metrics(
    scores: ArrayLike,
    relevant: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    names: tuple[str, str] = ("q2c", "c2q"),
) -> dict[str, float]:
    """Recall@k for each k and MRR in both directions.

    The forward direction ``names[0]`` ranks candidates for each query on ``scores`` (Q, C);
    the reverse direction ``names[1]`` ranks queries for each candidate on ``scores.T`` with
    the relevance transposed, so every candidate must have a relevant query. Keys are
    ``f"{name}_R@{k}"`` and ``f"{name}_MRR"``. Pessimistic tie rule as in :func:`recall_at_k`.
    Each k must be in [1, C] (forward) and [1, Q] (reverse).

    >>> retrieval_metrics([[0.9, 0.1], [0.8, 0.3]], [0, 1], ks=(1,))
    {'q2c_R@1': 0.5, 'q2c_MRR': 0.75, 'c2q_R@1': 1.0, 'c2q_MRR': 1.0}
    """
    s = _scores_2d(scores)
    rel = _relevance(relevant, s.shape)
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"names must be two distinct strings, got {names!r}")
    if len(ks) == 0:
        raise ValueError("ks must contain at least one k")
    out: dict[str, float] = {}
    for name, mat, r, what, other in (
        (names[0], s, rel, "query", "candidates"),
        (names[1], s.T, rel.T, "candidate", "queries"),
    ):
        ranks = _first_relevant_rank(mat, r, what)
        for k in ks:
            _check_k(k, mat.shape[1], other)
            out[f"{name}_R@{k}"] = float(np.mean(ranks <= k))
        out[f"{name}_MRR"] = float(np.mean(1.0 / ranks))
    return out


# --------------------------------------------------------------------------------------------
# Winoground (Thrush et al. 2022) and pairwise accuracy
# --------------------------------------------------------------------------------------------


def winoground_item_scores(s: ArrayLike) -> dict[str, NDArray[np.bool_]]:
    """Per-item Winoground text / image / group success (Thrush et al. 2022).

    ``s`` has shape (N, 2, 2) with ``s[n, c, i]`` = score of caption c with image i (caption 0
    belongs to image 0, caption 1 to image 1). With strict inequalities (ties fail):
    text = s[c0,i0] > s[c1,i0] and s[c1,i1] > s[c0,i1];
    image = s[c0,i0] > s[c0,i1] and s[c1,i1] > s[c1,i0]; group = text and image.

    >>> winoground_item_scores([[[1.0, 0.0], [0.5, 2.0]]])["group"]
    array([ True])
    """
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (2, 2) or a.shape[0] == 0:
        raise ValueError(f"s must have shape (N, 2, 2) with N >= 1, got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError("s contains NaN")
    text = (a[:, 0, 0] > a[:, 1, 0]) & (a[:, 1, 1] > a[:, 0, 1])
    image = (a[:, 0, 0] > a[:, 0, 1]) & (a[:, 1, 1] > a[:, 1, 0])
    return {"text": text, "image": image, "group": text & image}


def winoground_scores(s: ArrayLike) -> dict[str, float]:
    """Winoground text, image and group scores: the fractions of items that succeed.

    See :func:`winoground_item_scores` for the shape and the (strict) definitions.

    >>> winoground_scores([[[1.0, 0.0], [0.5, 2.0]], [[1.0, 1.0], [1.0, 1.0]]])
    {'text': 0.5, 'image': 0.5, 'group': 0.5}
    """
    return {key: float(v.mean()) for key, v in winoground_item_scores(s).items()}


def pairwise_accuracy(pos: ArrayLike, neg: ArrayLike) -> float:
    """Fraction of items whose positive score is strictly greater than its negative score.

    ``pos`` and ``neg`` are same-length non-empty 1-D arrays; ties count as failures.

    >>> pairwise_accuracy([0.9, 0.5, 0.2], [0.1, 0.5, 0.3])
    0.3333333333333333
    """
    p, n = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if p.ndim != 1 or p.shape != n.shape or p.size == 0:
        raise ValueError(f"pos and neg must be non-empty 1-D of equal length: {p.shape}, {n.shape}")
    if np.isnan(p).any() or np.isnan(n).any():
        raise ValueError("pos/neg contain NaN")
    return float(np.mean(p > n))


# --------------------------------------------------------------------------------------------
# VQA (Antol et al. 2015; normalisation of the official VQA evaluation script)
# --------------------------------------------------------------------------------------------

_VQA_PUNCT = ';/[]"{}()=+\\_-><@`,?!'
_VQA_COMMA_DIGITS = re.compile(r"(\d),(\d)")
_VQA_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a period that is not between two digits
_VQA_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4"}
_VQA_NUMBERS |= {"five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_ARTICLES = frozenset({"a", "an", "the"})
_VQA_CONTRACTIONS = {
    w.replace("'", ""): w
    for w in (
        *("aren't", "can't", "couldn't", "didn't", "doesn't", "don't", "hasn't", "haven't"),
        *("isn't", "i'm", "i've", "shouldn't", "that's", "there's", "they're", "wasn't"),
        *("weren't", "what's", "won't", "wouldn't", "you're"),
    )
}


def normalize_answer(text: str) -> str:
    """Normalise a VQA answer as the official VQA evaluation does (Antol et al. 2015).

    Steps: newlines/tabs to spaces, strip, lower-case; each of ``;/[]"{}()=+\\_-><@`,?!`` is
    deleted if it touches a space (or the text has a digit,digit comma), else replaced by a
    space; a period is deleted unless it sits between two digits (a decimal point); number
    words "none"/"zero".."ten" become digits (the official map includes "none" -> "0");
    articles a/an/the are dropped; a small set of apostrophe-less contractions is repaired
    ("dont" -> "don't"; the official list is longer); whitespace is collapsed.

    >>> [normalize_answer(t) for t in ["Two", "the dog.", "3.5", "It's", "10,000"]]
    ['2', 'dog', '3.5', "it's", '10000']
    """
    t = text.replace("\n", " ").replace("\t", " ").strip().lower()
    drop_all = _VQA_COMMA_DIGITS.search(t) is not None
    out = t
    for p in _VQA_PUNCT:
        out = out.replace(p, "" if (drop_all or p + " " in t or " " + p in t) else " ")
    out = _VQA_PERIOD.sub("", out)
    words = [_VQA_NUMBERS.get(w, w) for w in out.split()]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words if w not in _VQA_ARTICLES)


def vqa_item_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> NDArray[np.bool_]:
    """Per-item exact match after :func:`normalize_answer`.

    Each reference is one string or a non-empty list of acceptable strings; an item is correct
    when the normalised prediction equals any normalised reference.

    >>> vqa_item_scores(["Two", "cat"], [["2", "two"], "dog"])
    array([ True, False])
    """
    if len(predictions) != len(references) or len(predictions) == 0:
        raise ValueError(
            f"predictions and references must be non-empty and of equal length, "
            f"got {len(predictions)} and {len(references)}"
        )
    hits = np.zeros(len(predictions), dtype=bool)
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs:
            raise ValueError(f"references[{i}] is an empty list")
        hits[i] = normalize_answer(pred) in {normalize_answer(r) for r in refs}
    return hits


def vqa_exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Fraction of items whose normalised prediction matches a reference (see vqa_item_scores).

    >>> vqa_exact_match(["Two", "the dog."], ["2", ["dog", "puppy"]])
    1.0
    """
    return float(vqa_item_scores(predictions, references).mean())


# --------------------------------------------------------------------------------------------
# POPE (Li et al. 2023)
# --------------------------------------------------------------------------------------------

_PUNCT_TAIL = ".,!?;:'\")"


def _pope_label(text: str, i: int) -> bool:
    v = str(text).strip().lower().rstrip(_PUNCT_TAIL).strip()
    if v not in ("yes", "no"):
        raise ValueError(f"labels[{i}] = {text!r} is not 'yes' or 'no'")
    return v == "yes"


def pope_says_yes(text: str) -> bool:
    """Whether a generated answer counts as "yes", by the POPE reference rule (Li et al. 2023,
    RUCAIBox/POPE ``evaluate.py``, also LLaVA's ``eval_pope.py``).

    Keep the text before the first ".", drop commas, split into words; the answer is "no" iff a
    word is exactly ``No``, ``no`` or ``not``, and "yes" otherwise. Like the reference the test is
    case-sensitive ("NO" and "Not" are not negations) and an answer that says neither (empty,
    "maybe", "nope") counts as "yes". One difference: words are split at any whitespace, where
    the reference splits at single spaces only (so "no\\n" is "no" here, "yes" there).

    >>> [pope_says_yes(t) for t in ["Yes, there is.", "No.", "There is not.", "Yes. No.", "maybe"]]
    [True, False, False, True, True]
    """
    first = str(text).split(".")[0].replace(",", "")
    return not any(word in ("No", "no", "not") for word in first.split())


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE object-hallucination metrics (Li et al. 2023), positive class = "yes".

    A prediction is read with :func:`pope_says_yes` (the POPE reference rule). Labels must be
    "yes"/"no" (case, surrounding whitespace and trailing punctuation ignored). Returns accuracy,
    precision = TP/(TP+FP), recall = TP/(TP+FN), f1 and yes_ratio (fraction of predicted yes);
    precision, recall or f1 is 0.0 when its denominator is 0. POPE reports these per setting
    (random, popular, adversarial), each on a balanced set: every "yes" probe plus that
    setting's "no" probes (``sugar.eval.tasks.pope`` does so).

    >>> pope_metrics(["Yes.", "no", "yes", "no, it is not"], ["yes", "no", "no", "yes"])
    {'accuracy': 0.5, 'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'yes_ratio': 0.5}
    """
    if len(predictions) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"predictions and labels must be non-empty and of equal length, "
            f"got {len(predictions)} and {len(labels)}"
        )
    y = np.array([_pope_label(t, i) for i, t in enumerate(labels)], dtype=bool)
    p = np.array([pope_says_yes(t) for t in predictions], dtype=bool)
    tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float(np.mean(p == y)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "yes_ratio": float(p.mean()),
    }


# --------------------------------------------------------------------------------------------
# paired bootstrap (Efron & Tibshirani 1993)
# --------------------------------------------------------------------------------------------


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of the difference in mean per-item score, mean(a) - mean(b).

    ``a`` and ``b`` are per-item scores (e.g. 0/1 correctness) of two systems on the same n
    items. Items are resampled with replacement ``n_resamples`` times with
    ``numpy.random.default_rng(seed)`` (vectorised, in chunks); returns "difference" (on the
    full sample), the percentile interval "ci_low"/"ci_high" at ``confidence``, the two-sided
    "p_value" = min(1, 2 * min(P*(diff <= 0), P*(diff >= 0))) over resamples, and "n".
    Efron & Tibshirani (1993), An Introduction to the Bootstrap.

    >>> r = paired_bootstrap([1, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0], n_resamples=2000)
    >>> r["difference"], r["n"], r["ci_low"] <= r["difference"] <= r["ci_high"]
    (0.5, 6, True)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be 1-D of equal length, got shapes {x.shape}, {y.shape}")
    if x.size == 0:
        raise ValueError("a and b must be non-empty")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("a/b contain NaN")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n, d = x.size, x - y
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, min(n_resamples, (1 << 22) // n))  # ~32 MiB of int64 indices per chunk
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        diffs[start : start + m] = d[rng.integers(0, n, size=(m, n))].mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(diffs, [alpha / 2, 1.0 - alpha / 2])
    p = min(1.0, 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return {
        "difference": float(x.mean() - y.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": float(p),
        "n": n,
    }


EDIT_METRICS = (
    "reliability", "text_generality", "image_generality", "text_locality", "image_locality",
)  # fmt: skip
"""MMEdit's five knowledge-editing metrics (Cheng et al. 2023), in report order."""


def edit_summary(flags: dict[str, list[bool]]) -> dict[str, float]:
    """Percent of probes passed per editing metric, and ``mean``, the mean of the metrics that
    have probes (a metric without any, e.g. image generality of text-only edits, is left out,
    never counted as 0). Unknown metric names raise ``ValueError``.

    >>> edit_summary({"reliability": [True, True], "text_locality": [True, False]})
    {'reliability': 100.0, 'text_locality': 50.0, 'mean': 75.0}
    """
    unknown = set(flags) - set(EDIT_METRICS)
    if unknown:
        raise ValueError(f"unknown edit metrics {sorted(unknown)}; known: {list(EDIT_METRICS)}")
    out = {
        name: 100.0 * sum(flags[name]) / len(flags[name])
        for name in EDIT_METRICS
        if flags.get(name)
    }
    if out:
        out["mean"] = sum(out.values()) / len(out)
    return out
