"""The control run's learning-rate schedule (``lr_schedule``) against a step-by-step naive
reference, and the config's checks on it."""

from __future__ import annotations

import itertools
import math

import pytest

from sugar.config import ConfigError
from sugar.control.config import load_control_config
from sugar.control.train import round_lr


def test_cosine_restarts_each_round_and_ends_near_the_floor() -> None:
    cfg = load_control_config(None, ["base=b", "lr=0.002", "lr_schedule=cosine",
                                     "lr_floor=0.25", "steps_per_round=7"])  # fmt: skip
    naive = []
    for step in range(7):  # the half cosine from lr to lr * floor, written out
        weight = 0.5 * (1 + math.cos(math.pi * step / 7))
        naive.append(0.002 * 0.25 + (0.002 - 0.002 * 0.25) * weight)
    got = [round_lr(cfg, step) for step in range(7)]
    assert got == pytest.approx(naive, rel=1e-12)
    assert got[0] == 0.002 and all(a > b for a, b in itertools.pairwise(got))
    assert 0.0005 < got[-1] < 0.0006
    constant = load_control_config(None, ["base=b", "lr=0.002", "steps_per_round=7"])
    assert constant.lr_schedule == "constant"
    assert {round_lr(constant, step) for step in range(7)} == {0.002}


BAD = [("lr_schedule=linear", "lr_schedule"), ("lr_floor=1.5", "lr_floor"),
       ("lr_floor=-0.1", "lr_floor")]  # fmt: skip


@pytest.mark.parametrize("override, key", BAD)
def test_bad_schedule_settings_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_control_config(None, ["base=b", override])
