"""Teacher slice embeddings of training samples, as L_d asks for them in every step.

Shapes: B samples, S slices per sample (padded).

:class:`TeacherLookup` is the callable ``(samples, root) -> SliceEmbeddings`` the objective
takes (tests pass any callable of this signature, :data:`SliceLookup`);
:func:`teacher_lookup_from_config` builds it from the config's ``teacher`` section.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from sugar.align import SliceEmbeddings
from sugar.config import SugarConfig
from sugar.data.schema import Sample
from sugar.teachers.base import build_teacher, embed_samples, teacher_cache

__all__ = ["SliceLookup", "TeacherLookup", "teacher_lookup_from_config"]

SliceLookup = Callable[[Sequence[Sample], str | Path], SliceEmbeddings]


class TeacherLookup:
    """Teacher slice embeddings of samples: a callable ``(samples, root) -> SliceEmbeddings``.

    Wraps :func:`sugar.teachers.embed_samples` with its persistent cache, and keeps each
    sample's slice vectors in memory (keyed by the sample's segments and root, least recently
    used dropped beyond ``memory_slices`` slices), so a training step does not decode and hash
    every image again to find its cached vectors. Tests pass any callable with this signature.
    """

    def __init__(
        self,
        teacher: Any,
        cache: Any,
        by: Literal["sentence", "segment"],
        memory_slices: int = 200_000,
    ) -> None:
        self.teacher, self.cache, self.by = teacher, cache, by
        self.memory_slices = memory_slices
        self._memory: OrderedDict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = OrderedDict()
        self._slices_held = 0

    def __call__(self, samples: Sequence[Sample], root: str | Path) -> SliceEmbeddings:
        keys = [f"{root}\0{json.dumps([g.to_dict() for g in s.segments])}" for s in samples]
        missing = [i for i, key in enumerate(keys) if key not in self._memory]
        if missing:
            fresh = embed_samples(
                self.teacher, [samples[i] for i in missing], root, by=self.by, cache=self.cache
            )
            for row, i in enumerate(missing):
                n = int(fresh.lengths[row])
                entry = (
                    fresh.image[row, :n], fresh.text[row, :n], fresh.cross[row, :n],
                    fresh.is_text[row, :n],
                )  # fmt: skip
                if keys[i] not in self._memory:
                    self._memory[keys[i]] = entry
                    self._slices_held += n
        entries = []
        for key in keys:
            self._memory.move_to_end(key)
            entries.append(self._memory[key])
        while self._slices_held > self.memory_slices and len(self._memory) > len(keys):
            _, dropped = self._memory.popitem(last=False)
            self._slices_held -= dropped[0].shape[0]
        lengths = torch.tensor([e[0].shape[0] for e in entries])
        size = int(lengths.max())

        def padded(part: int) -> Tensor:
            first = entries[0][part]
            out = first.new_zeros((len(entries), size, *first.shape[1:]))
            for row, entry in enumerate(entries):
                out[row, : entry[part].shape[0]] = entry[part]
            return out

        return SliceEmbeddings(padded(0), padded(1), padded(2), padded(3), lengths)


def teacher_lookup_from_config(cfg: SugarConfig) -> TeacherLookup:
    """The teacher L_d uses, from the config's ``teacher`` section, with its persistent cache.

    The ``offline`` family reads the head trained by ``sugar train-teacher`` from
    ``teacher.head_dir`` (``FileNotFoundError`` naming it when missing).
    """
    t = cfg.teacher
    cache_dir = t.cache_dir or None
    options: dict[str, Any] = dict(t.options)
    if t.family == "offline":
        if not (Path(t.head_dir) / "head.json").is_file():
            raise FileNotFoundError(
                f"teacher.head_dir={t.head_dir!r}: no trained head; run sugar train-teacher first"
            )
        options = {"head_dir": t.head_dir, "feature_cache_dir": cache_dir, **options}
    teacher = build_teacher(t.family, **options)
    return TeacherLookup(teacher, teacher_cache(cache_dir, teacher), cfg.structure.slice_text_by)
