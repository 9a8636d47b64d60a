"""The editing metrics, worked out by hand."""

from __future__ import annotations

import pytest

from sugar.eval.metrics import edit_summary


def test_edit_summary_by_hand() -> None:
    flags = {
        "reliability": [True, True, True, False],  # 75
        "text_generality": [True, False],  # 50
        "text_locality": [True, True],  # 100
        "image_locality": [False, True, True, True],  # 75
    }
    out = edit_summary(flags)
    assert out == {"reliability": 75.0, "text_generality": 50.0, "text_locality": 100.0,
                   "image_locality": 75.0, "mean": 75.0}  # fmt: skip
    assert "image_generality" not in out  # no probes: left out, not 0


def test_edit_summary_refuses_unknown_metrics() -> None:
    with pytest.raises(ValueError, match="unknown edit metrics"):
        edit_summary({"portability": [True]})
