"""Doctests in src/sugar see ``torch`` and ``np`` without importing them in every example."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace["torch"] = torch
    doctest_namespace["np"] = np


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


# Modules of optional extras: their doctests are collected only where the extra is installed.
collect_ignore = [
    path
    for path, module in (
        ("src/sugar/serve/app.py", "fastapi"),
        ("src/sugar/st.py", "sentence_transformers"),
    )
    if _missing(module)
]
# The Triton kernels hold no doctests, and importing them here would decorate them before
# tests/align/test_triton.py can ask for triton's interpreter (TRITON_INTERPRET=1).
collect_ignore += ["src/sugar/align/_triton.py", "src/sugar/align/_triton_kernels.py"]
