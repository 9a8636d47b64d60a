"""The control branch a bundle carries as its extra module ``control`` (``sugar train-control``
writes it beside the base model's backbone and projector)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sugar.control.branch import ControlBranch

__all__ = ["CONTROL", "control_from_extras"]

CONTROL = "control"
"""The extra module's name in a bundle."""


def control_from_extras(
    extras: dict[str, dict[str, Tensor]], specs: dict[str, dict[str, Any]], source: str
) -> ControlBranch | None:
    """The branch rebuilt from a bundle's extras, in eval mode; None when it has none.
    ``ValueError`` naming ``source`` when its spec or tensors do not fit."""
    state = extras.get(CONTROL)
    if not state:
        return None
    try:
        branch = ControlBranch(**specs[CONTROL])
        branch.load_state_dict(state)
    except (TypeError, KeyError, RuntimeError) as exc:
        raise ValueError(f"{source}: extra module {CONTROL!r} does not load ({exc})") from None
    return branch.eval()
