"""The editor interface and the registry of editing methods.

Shapes: B batch, T tokens, D width, V scored vocabulary.

An :class:`Editor` owns a :class:`~sugar.edit.site.FeedForwardSite` on a backbone and applies
edits **sequentially** (``add``), each one on top of the model the previous ones left; an edit
is removed by id (``remove``). Prompts pass through :meth:`Editor.rewrite` before the model
sees them (identity except for the in-context editor, which puts a retrieved fact in front).
Its edits travel in a bundle as the extra module ``edits``: :meth:`Editor.spec` (method,
options, the edit records: listed in ``model.json``) and :meth:`Editor.state` (tensors).
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from sugar.data.collate import IGNORE_INDEX
from sugar.data.schema import Sample
from sugar.edit.records import EditRequest
from sugar.edit.site import FeedForwardSite
from sugar.models.base import MLLM

__all__ = ["EDITORS", "Editor", "build_editor", "register_editor", "target_loss"]

EDITORS: dict[str, type[Editor]] = {}


def register_editor(name: str) -> Any:
    """Class decorator: ``sugar edit --method NAME`` builds this editor."""

    def decorate(cls: type[Editor]) -> type[Editor]:
        cls.method = name
        EDITORS[name] = cls
        return cls

    return decorate


def target_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the supervised tokens. (B, T, V), (B, T) -> ()"""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


class Editor(abc.ABC):
    """Sequential, reversible edits of one backbone (module docstring)."""

    method: ClassVar[str] = ""

    def __init__(self, backbone: MLLM, root: str | Path, *, layer: int = -1) -> None:
        backbone.eval()
        self.backbone = backbone
        self.root = Path(root)
        self.site = FeedForwardSite(backbone, layer)
        self.edits: dict[str, EditRequest] = {}
        self.options: dict[str, Any] = {"layer": layer}
        """What rebuilds this editor (with :meth:`state`); JSON values."""

    # ---- the interface ---------------------------------------------------------------------

    def add(self, edit: EditRequest) -> None:
        """Apply ``edit`` on top of the edits so far (``ValueError`` for a repeated id, or for
        an answer the model cannot say: :meth:`check_answer`)."""
        if edit.id in self.edits:
            raise ValueError(f"edit {edit.id!r} is already applied; remove it first")
        self.check_answer(edit)
        self._add(edit)
        self.edits[edit.id] = edit

    def remove(self, edit_id: str) -> None:
        """Undo the edit ``edit_id`` (``ValueError`` naming the applied ids when unknown)."""
        if edit_id not in self.edits:
            raise ValueError(f"no edit {edit_id!r}; applied: {sorted(self.edits)}")
        self._remove(edit_id)
        del self.edits[edit_id]

    def check_answer(self, edit: EditRequest) -> None:
        """``ValueError`` when the new answer has tokens outside the backbone's output
        vocabulary (MiniLM with ``output_vocab=corpus`` scores and generates them as
        ``[UNK]``, counted in ``unmapped_targets``): such an edit would "take" as ``[UNK]``
        and report reliability it does not have. Backbones without the counter score every
        token."""
        before = getattr(self.backbone, "unmapped_targets", None)
        if before is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the backbone's own warning; this error says more
            self.backbone.collate([edit.target()], self.root)
        after = self.backbone.unmapped_targets
        self.backbone.unmapped_targets = before
        if after > before:
            raise ValueError(
                f"edit {edit.id!r}: the answer {edit.answer!r} has {after - before} token(s) "
                "outside the model's output vocabulary (model.output_vocab=corpus), which it "
                "can only say as [UNK]; train the base with model.output_vocab=full, or on "
                "texts that contain the answer"
            )

    def rewrite(self, samples: Sequence[Sample]) -> list[Sample]:
        """What the model is shown for ``samples`` (default: themselves)."""
        return list(samples)

    def close(self) -> None:
        """Detach from the backbone (hook-based edits stop acting; weight edits stay)."""
        self.site.close()

    @abc.abstractmethod
    def _add(self, edit: EditRequest) -> None: ...

    @abc.abstractmethod
    def _remove(self, edit_id: str) -> None: ...

    @abc.abstractmethod
    def state(self) -> dict[str, Tensor]:
        """Every tensor the applied edits need, keyed so :meth:`load_state` restores them."""

    @abc.abstractmethod
    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        """Restore ``edits`` (as recorded by :meth:`spec`) from :meth:`state`'s tensors."""

    def spec(self) -> dict[str, Any]:
        """The bundle record: method, options and the applied edits in order."""
        return {
            "method": self.method,
            "options": dict(self.options),
            "edits": [edit.record() for edit in self.edits.values()],
        }

    # ---- shared steps ----------------------------------------------------------------------

    def optimise(
        self, parameters: list[Tensor], edit: EditRequest, steps: int, lr: float, extra: Any = None
    ) -> int:
        """Adam on ``parameters`` to make the (rewritten) edit prompt give the new answer:
        the target's cross-entropy, plus ``extra(capture)`` when given; stops early once every
        answer token is the argmax and ``extra`` is (near) 0. Only ``parameters`` get
        gradients. Returns the steps taken."""
        sample = self.rewrite([edit.target()])[0]
        trainable = {id(p) for p in parameters}
        states = {p: p.requires_grad for p in self.backbone.parameters()}
        for p in states:  # only the edit's parameters get gradients
            p.requires_grad_(id(p) in trainable)
        try:
            with torch.enable_grad():  # the evaluation tasks run under no_grad
                return self._fit(sample, torch.optim.Adam(parameters, lr=lr), steps, extra)
        finally:
            for p, flag in states.items():
                p.requires_grad_(flag)
                p.grad = None

    def _fit(self, sample: Sample, optimiser: Any, steps: int, extra: Any) -> int:
        fixed = self.site.capture([sample], self.root)  # the layers before the site
        fast = self.site.tail(fixed.keys) is not None
        for step in range(steps):
            tail = self.site.tail(fixed.keys) if fast else None
            if tail is not None:  # the same logits as a full pass; only the tail is recomputed
                capture = replace(fixed, logits=tail)
            else:
                capture = self.site.capture([sample], self.root, grad=True)
            labels = capture.batch.labels.to(capture.logits.device)
            fit = target_loss(capture.logits, labels)
            loss = fit if extra is None else fit + extra(capture)
            supervised = labels[:, 1:] != IGNORE_INDEX
            right = capture.logits[:, :-1].argmax(-1) == labels[:, 1:]
            if bool(right[supervised].all()) and float((loss - fit).detach()) < 1e-3:
                return step
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return steps


def build_editor(
    method: str,
    backbone: MLLM,
    root: str | Path,
    support: Sequence[EditRequest] = (),
    **options: Any,
) -> Editor:
    """The registered editor ``method`` (``ValueError`` listing the known ones).

    ``support``: edits of another split (never the ones to apply) that two methods learn from:
    ``patcher`` takes its negatives (T-Patcher's memory set) from the first 100 edits'
    locality prompts, each followed by that edit's answer, unless ``negatives`` is given;
    ``unike`` trains its scope space on all of them, unless ``space`` is given."""
    from sugar.edit import context, finetune, memory, patcher, unike  # noqa: F401  (register)

    if method not in EDITORS:
        raise ValueError(f"unknown edit method {method!r}; known: {sorted(EDITORS)}")
    if method == "patcher" and "negatives" not in options:
        options["negatives"] = [
            e.target(e.probes[name]) for e in support[:100]
            for name in ("text_locality", "image_locality") if name in e.probes
        ]  # fmt: skip
    if method == "unike" and "space" not in options:
        options["scope_edits"] = list(support)
    return EDITORS[method](backbone, root, **options)
