"""Hand-worked tests for sugar.eval.metrics (expected numbers derived by hand, not by the code)."""

from __future__ import annotations

import numpy as np
import pytest

from sugar.eval.metrics import (
    mean_reciprocal_rank,
    normalize_answer,
    paired_bootstrap,
    pairwise_accuracy,
    pope_metrics,
    pope_says_yes,
    recall_at_k,
    retrieval_metrics,
    vqa_exact_match,
    vqa_item_scores,
    winoground_item_scores,
    winoground_scores,
)

# Query i's relevant candidate is candidate i (identity relevance).
#            c0   c1   c2   c3
S4 = np.array(
    [
        [0.9, 0.1, 0.5, 0.5],  # q0: rel 0.9, nothing >= it            -> rank 1
        [0.8, 0.4, 0.2, 0.6],  # q1: rel 0.4, {0.8, 0.6} above         -> rank 3
        [0.1, 0.7, 0.3, 0.2],  # q2: rel 0.3, {0.7} above              -> rank 2
        [0.5, 0.6, 0.9, 0.4],  # q3: rel 0.4, {0.5, 0.6, 0.9} above    -> rank 4
    ]
)
# q2c ranks (1, 3, 2, 4): R@1 = 1/4, R@2 = 2/4, R@4 = 4/4,
#   MRR = (1 + 1/3 + 1/2 + 1/4) / 4 = (12 + 4 + 6 + 3) / 48 = 25/48.
# c2q (columns): c0 [.9 .8 .1 .5] rel .9 -> 1; c1 [.1 .4 .7 .6] rel .4 -> {.7,.6} -> 3;
#   c2 [.5 .2 .3 .9] rel .3 -> {.5,.9} -> 3; c3 [.5 .6 .2 .4] rel .4 -> {.5,.6} -> 3.
# c2q ranks (1, 3, 3, 3): R@1 = 1/4, R@2 = 1/4, R@4 = 1, MRR = (1 + 3 * 1/3) / 4 = 1/2.
IDX4 = np.arange(4)


def test_hand_worked_4x4_both_directions() -> None:
    m = retrieval_metrics(S4, IDX4, ks=(1, 2, 4))
    assert m["q2c_R@1"] == pytest.approx(0.25)
    assert m["q2c_R@2"] == pytest.approx(0.5)
    assert m["q2c_R@4"] == pytest.approx(1.0)
    assert m["q2c_MRR"] == pytest.approx(25 / 48)
    assert m["c2q_R@1"] == pytest.approx(0.25)
    assert m["c2q_R@2"] == pytest.approx(0.25)
    assert m["c2q_R@4"] == pytest.approx(1.0)
    assert m["c2q_MRR"] == pytest.approx(0.5)
    assert set(m) == {f"{d}_{k}" for d in ("q2c", "c2q") for k in ("R@1", "R@2", "R@4", "MRR")}
    assert all(type(v) is float for v in m.values())
    # single-direction functions agree with the forward direction, and on S4.T with c2q
    assert recall_at_k(S4, IDX4, 2) == pytest.approx(0.5)
    assert mean_reciprocal_rank(S4, IDX4) == pytest.approx(25 / 48)
    assert recall_at_k(S4.T, IDX4, 2) == pytest.approx(0.25)
    assert mean_reciprocal_rank(S4.T, IDX4) == pytest.approx(0.5)


def test_custom_names() -> None:
    m = retrieval_metrics(S4, IDX4, ks=(1,), names=("i2t", "t2i"))
    assert set(m) == {"i2t_R@1", "i2t_MRR", "t2i_R@1", "t2i_MRR"}


def test_relevance_formats_agree() -> None:
    by_index = retrieval_metrics(S4, IDX4, ks=(1, 2, 3))
    by_matrix = retrieval_metrics(S4, np.eye(4, dtype=bool), ks=(1, 2, 3))
    by_01 = retrieval_metrics(S4, np.eye(4, dtype=int), ks=(1, 2, 3))
    assert by_index == by_matrix == by_01


def test_two_relevant_candidates() -> None:
    # q1 row [0.8, 0.4, 0.2, 0.6] with relevant {c1, c3}: best relevant 0.6, only 0.8 above
    # -> rank 2 (instead of 3 with c1 alone). Ranks (1, 2, 2, 4): R@1 = 1/4, R@2 = 3/4,
    # MRR = (1 + 1/2 + 1/2 + 1/4) / 4 = 9/16.
    rel = np.eye(4, dtype=bool)
    rel[1, 3] = True
    assert recall_at_k(S4, rel, 1) == pytest.approx(0.25)
    assert recall_at_k(S4, rel, 2) == pytest.approx(0.75)
    assert mean_reciprocal_rank(S4, rel) == pytest.approx(9 / 16)
    # reverse: column c3 now has relevant {q1, q3}: [0.5, 0.6, 0.2, 0.4], best 0.6, none
    # irrelevant >= 0.6 -> rank 1. c2q ranks (1, 3, 3, 1): MRR = (1 + 1/3 + 1/3 + 1)/4 = 2/3.
    assert retrieval_metrics(S4, rel, ks=(1,))["c2q_MRR"] == pytest.approx(2 / 3)


def test_tie_rule_is_pessimistic() -> None:
    const = np.ones((4, 4))
    m = retrieval_metrics(const, IDX4, ks=(1, 3, 4))
    # every relevant candidate ties with 3 irrelevant ones -> rank 4 for every query
    assert m["q2c_R@1"] == 0.0
    assert m["q2c_R@3"] == 0.0
    assert m["q2c_R@4"] == 1.0
    assert m["q2c_MRR"] == pytest.approx(0.25)
    assert m["c2q_R@1"] == 0.0
    # a tie with an irrelevant candidate costs a rank whichever column comes first
    assert mean_reciprocal_rank([[0.5, 0.5, 0.1]], [1]) == pytest.approx(0.5)
    assert mean_reciprocal_rank([[0.5, 0.5, 0.1]], [0]) == pytest.approx(0.5)
    # a tie between two relevant candidates costs nothing
    assert mean_reciprocal_rank([[0.5, 0.5, 0.1]], [[True, True, False]]) == 1.0


def test_non_square_index_relevance() -> None:
    # 2 queries, 3 candidates; forward is fine but c2 has no relevant query in reverse
    s = [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]
    assert recall_at_k(s, [0, 1], 1) == 1.0
    with pytest.raises(ValueError, match="relevant: candidate 2"):
        retrieval_metrics(s, [0, 1], ks=(1,))


@pytest.mark.parametrize(
    ("scores", "relevant", "k", "match"),
    [
        (np.ones(4), IDX4, 1, "scores must be 2-D.*\\(4,\\)"),
        (np.ones((2, 3, 4)), IDX4, 1, "scores must be 2-D"),
        (np.ones((0, 4)), IDX4, 1, "scores must be non-empty"),
        (S4, np.arange(3), 1, "relevant has shape \\(3,\\)"),
        (S4, np.eye(3, dtype=bool), 1, "relevant has shape \\(3, 3\\)"),
        (S4, np.array([0, 1, 2, 4]), 1, "relevant\\[3\\] = 4"),
        (S4, np.array([0, -1, 2, 3]), 1, "relevant\\[1\\] = -1"),
        (S4, np.eye(4) * 0.5, 1, "relevant matrix must be boolean"),
        (S4, np.zeros((4, 4), dtype=bool), 1, "relevant: query 0 has no relevant"),
        (S4, IDX4, 0, "k must be in \\[1, 4\\].*k=0"),
        (S4, IDX4, 5, "k must be in \\[1, 4\\].*k=5"),
        (np.where(np.eye(4) > 0, np.nan, S4), IDX4, 1, "scores contains NaN"),
    ],
)
def test_retrieval_errors(scores: object, relevant: object, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        recall_at_k(scores, relevant, k)  # type: ignore[arg-type]


def test_retrieval_metrics_errors() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        retrieval_metrics(S4, IDX4)  # default ks includes 5 and 10 > 4 candidates
    with pytest.raises(ValueError, match="relevant: query 2"):
        mean_reciprocal_rank(S4, np.eye(4, dtype=bool) & (np.arange(4) != 2)[:, None])
    with pytest.raises(ValueError, match="names"):
        retrieval_metrics(S4, IDX4, ks=(1,), names=("a", "a"))
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(S4, IDX4, ks=())


# ------------------------------------------------------------------------------ Winoground

WINO = np.array(
    [
        # s[c, i]; item 0 all correct: text 0.9>0.2, 0.8>0.1; image 0.9>0.1, 0.8>0.2
        [[0.9, 0.1], [0.2, 0.8]],
        # item 1 text only: text 0.5>0.1, 0.9>0.6; image 0.5>0.6 fails
        [[0.5, 0.6], [0.1, 0.9]],
        # item 2 neither: text 0.1>0.8 fails; image 0.1>0.9 fails
        [[0.1, 0.9], [0.8, 0.2]],
    ]
)


def test_winoground_hand_worked() -> None:
    assert winoground_scores(WINO) == pytest.approx({"text": 2 / 3, "image": 1 / 3, "group": 1 / 3})
    items = winoground_item_scores(WINO)
    assert items["text"].tolist() == [True, True, False]
    assert items["image"].tolist() == [True, False, False]
    assert items["group"].tolist() == [True, False, False]


def test_winoground_image_only_and_ties() -> None:
    # image 0.5>0.1, 0.7>0.6; text 0.5>0.6 fails
    assert winoground_scores([[[0.5, 0.1], [0.6, 0.7]]]) == {
        "text": 0.0,
        "image": 1.0,
        "group": 0.0,
    }
    assert winoground_scores(np.ones((2, 2, 2))) == {"text": 0.0, "image": 0.0, "group": 0.0}
    # one tie (s[c0,i0] == s[c1,i0]) breaks text but not image
    assert winoground_scores([[[0.9, 0.1], [0.9, 1.0]]]) == {
        "text": 0.0,
        "image": 1.0,
        "group": 0.0,
    }


@pytest.mark.parametrize("bad", [np.ones((3, 2)), np.ones((3, 2, 3)), np.ones((0, 2, 2))])
def test_winoground_shape_errors(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="s must have shape"):
        winoground_scores(bad)


def test_winoground_nan_error() -> None:
    with pytest.raises(ValueError, match="s contains NaN"):
        winoground_scores(np.full((1, 2, 2), np.nan))


def test_pairwise_accuracy() -> None:
    # 0.9>0.1 yes; 0.5>0.5 tie -> fail; 0.2>0.3 no; 1.0>-1.0 yes -> 2/4
    assert pairwise_accuracy([0.9, 0.5, 0.2, 1.0], [0.1, 0.5, 0.3, -1.0]) == 0.5
    with pytest.raises(ValueError, match="pos and neg"):
        pairwise_accuracy([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="pos and neg"):
        pairwise_accuracy([], [])
    with pytest.raises(ValueError, match="NaN"):
        pairwise_accuracy([np.nan], [1.0])


# ------------------------------------------------------------------------------ VQA


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("2", "2"),
        ("the dog.", "dog"),
        ("3.5", "3.5"),
        ("It's", "it's"),
        ("  A Red,  Car\n", "red car"),  # ',' touching a space is deleted
        ("yes/no", "yes no"),  # '/' not touching a space becomes a space
        ("10,000", "10000"),
        ("dont", "don't"),
        ("none", "0"),
        ("an apple!", "apple"),
        ("ten", "10"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_vqa_exact_match() -> None:
    preds = ["Two", "the dog.", "cat", "3.5"]
    refs: list[str | list[str]] = [["2", "two dogs"], ["puppy", "Dog"], "dog", "3.50"]
    # hit, hit, miss, miss ("3.5" != "3.50")
    assert vqa_item_scores(preds, refs).tolist() == [True, True, False, False]
    assert vqa_exact_match(preds, refs) == 0.5
    with pytest.raises(ValueError, match="predictions and references"):
        vqa_exact_match(["a"], [])
    with pytest.raises(ValueError, match=r"references\[1\]"):
        vqa_exact_match(["a", "b"], ["a", []])


# ------------------------------------------------------------------------------ POPE


def test_pope_reads_answers_by_the_reference_rule() -> None:
    # POPE's evaluate.py: the first sentence, commas dropped, words; "no" iff No / no / not
    answers = {
        "Yes": True,
        "yes, there is a cat.": True,
        "No": False,
        "no.": False,
        "No, there is none.": False,  # "No," -> "No" once commas are dropped
        "There is not a cat": False,
        "Yes. No doubt.": True,  # only the first sentence counts
        "I think so": True,  # no negation: yes, as in the reference
        "": True,
        "nope": True,  # not the word "no"
        "NO": True,  # case-sensitive, as in the reference
        "no\n": False,  # whitespace split (the reference splits at spaces only)
    }
    assert {t: pope_says_yes(t) for t in answers} == answers


def test_pope_hand_worked() -> None:
    preds = [
        "Yes",
        "yes, there is a cat.",
        "No",
        "no.",
        "yes",
        "I think so",
        "There is not",
        " Yes! ",
    ]
    labels = ["yes", "yes", "yes", "no", "No.", "no", "no", " YES "]
    # parsed: Y Y N N Y Y N Y
    # pairs:  TP TP FN TN FP FP TN TP -> TP=3, FP=2, TN=2, FN=1
    # accuracy 5/8, precision 3/5, recall 3/4, f1 = 2*.6*.75/1.35 = 2/3, yes_ratio 5/8
    m = pope_metrics(preds, labels)
    assert m == pytest.approx(
        {"accuracy": 0.625, "precision": 0.6, "recall": 0.75, "f1": 2 / 3, "yes_ratio": 0.625}
    )


def test_pope_edge_cases() -> None:
    # no predicted yes -> precision, recall, f1 = 0
    m = pope_metrics(["no", "not at all"], ["yes", "no"])
    assert m == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}
    with pytest.raises(ValueError, match=r"labels\[1\] = 'maybe'"):
        pope_metrics(["yes", "no"], ["yes", "maybe"])
    with pytest.raises(ValueError, match="predictions and labels"):
        pope_metrics(["yes"], ["yes", "no"])
    with pytest.raises(ValueError, match="predictions and labels"):
        pope_metrics([], [])


# ------------------------------------------------------------------------------ bootstrap


def test_bootstrap_clear_difference() -> None:
    rng = np.random.default_rng(123)
    b = rng.normal(0.0, 1.0, 200)
    noise = rng.normal(0.0, 0.1, 200)
    a = b + 0.5 + (noise - noise.mean())  # true (and sample) difference exactly 0.5
    r = paired_bootstrap(a, b, n_resamples=5000, seed=1)
    assert r["n"] == 200
    assert r["difference"] == pytest.approx(0.5)
    assert 0.0 < r["ci_low"] < 0.5 < r["ci_high"]
    assert r["p_value"] == 0.0
    # percentile CI width ~ 2 * 1.96 * sd(a - b) / sqrt(n)
    d = a - b
    expected_width = 2 * 1.96 * d.std() / np.sqrt(200)
    assert r["ci_high"] - r["ci_low"] == pytest.approx(expected_width, rel=0.15)


def test_bootstrap_identical_systems() -> None:
    a = np.random.default_rng(0).random(50)
    r = paired_bootstrap(a, a.copy(), n_resamples=1000)
    assert r["difference"] == 0.0
    assert r["ci_low"] <= 0.0 <= r["ci_high"]
    assert r["p_value"] == 1.0


def test_bootstrap_no_difference_p_value_large() -> None:
    # symmetric paired differences +1/-1 around 0: p-value should be far from significant
    a = np.array([1.0, 0.0] * 50)
    b = np.array([0.0, 1.0] * 50)
    r = paired_bootstrap(a, b, n_resamples=4000)
    assert r["difference"] == 0.0
    assert r["ci_low"] < 0.0 < r["ci_high"]
    assert r["p_value"] > 0.5


def test_bootstrap_seed_and_chunking_determinism() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random(300), rng.random(300)
    r1 = paired_bootstrap(a, b, n_resamples=3000, seed=5)
    r2 = paired_bootstrap(a, b, n_resamples=3000, seed=5)
    r3 = paired_bootstrap(a, b, n_resamples=3000, seed=6)
    assert r1 == r2
    assert (r1["ci_low"], r1["ci_high"]) != (r3["ci_low"], r3["ci_high"])
    assert r1["difference"] == r3["difference"]
    assert all(type(v) in (float, int) for v in r1.values())
    # many items -> several chunks; still runs and is sane
    big = paired_bootstrap(np.ones(50_000), np.zeros(50_000), n_resamples=200)
    assert big["ci_low"] == big["ci_high"] == 1.0


def test_bootstrap_errors() -> None:
    with pytest.raises(ValueError, match="a and b must be 1-D of equal length"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="a and b must be non-empty"):
        paired_bootstrap([], [])
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            paired_bootstrap([1.0], [0.0], confidence=c)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap([1.0], [0.0], n_resamples=0)
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([np.nan], [0.0])
