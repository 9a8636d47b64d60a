"""Issue 18 items 4-5: a bundle with non-finite weights is never written nor loaded; a
checkpoint of another architecture is refused (no silent ``strict=False``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sugar.models.bundle as bundle_module
from sugar.models.bundle import load_bundle, save_bundle
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.train.run import check_state_keys

TINY = {"width": 16, "layers": 1, "heads": 2, "max_positions": 64, "feature_cache": None}


def _model(width: int = 16) -> TinyMLLM:
    tokenizer = Tokenizer.train(["a red square", "a blue circle"] * 4, vocab_size=300)
    return TinyMLLM(tokenizer, **{**TINY, "width": width})


def test_a_non_finite_bundle_is_never_written_nor_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    name, parameter = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        parameter[0] = float("nan")
    with pytest.raises(ValueError, match="refusing to write a bundle with non-finite weights"):
        save_bundle(tmp_path / "b", model)
    assert not (tmp_path / "b").exists()
    # a bundle that holds NaN anyway (written by an older sugar): refused on load
    with monkeypatch.context() as patch:
        patch.setattr(bundle_module, "non_finite", lambda tensors: [])
        save_bundle(tmp_path / "b", model)
    with pytest.raises(ValueError, match=f"non-finite weights .*{name}"):
        load_bundle(tmp_path / "b")


def test_a_checkpoint_of_another_architecture_is_refused() -> None:
    model, wider = _model(), _model(width=32)
    check_state_keys(model, model.trainable_state_dict(), "ck")
    with pytest.raises(ValueError, match="ck: its model tensors do not match this model"):
        check_state_keys(model, wider.trainable_state_dict(), "ck")
    partial = dict(list(model.trainable_state_dict().items())[1:])
    with pytest.raises(ValueError, match="missing"):
        check_state_keys(model, partial, "ck")
