"""Teachers: where the inputs of L_d's targets come from (METHOD.md section 4).

- :mod:`sugar.teachers.base` -- the :class:`Teacher` protocol, the family registry, slice
  embedding through the persistent cache;
- :mod:`sugar.teachers.offline` -- the ``offline`` family (EfficientNet-Lite0, MiniLM, a head);
- :mod:`sugar.teachers.hf` -- the ``hf`` family (CLIP / SigLIP, DINOv2, BGE), for GPU users;
- :mod:`sugar.teachers.heads` -- the offline teacher's cross-modal head;
- :mod:`sugar.teachers.training` -- training that head (``sugar train-teacher``);
- :mod:`sugar.teachers.lookup` -- :class:`TeacherLookup`, the slice lookup L_d calls each step;
- :mod:`sugar.teachers.sensitivity` -- what a teacher sees per hard-negative kind.
"""

from sugar.teachers.base import (
    TEACHER_FAMILIES,
    SliceContent,
    Teacher,
    TeacherEmbeddings,
    build_teacher,
    embed_samples,
    embed_slices,
    register_teacher,
    sample_slice_contents,
    slice_key,
    teacher_cache,
)
from sugar.teachers.offline import ImageFeatures, OfflineTeacher, TextFeatures

__all__ = [
    "TEACHER_FAMILIES",
    "ImageFeatures",
    "OfflineTeacher",
    "SliceContent",
    "Teacher",
    "TeacherEmbeddings",
    "TextFeatures",
    "build_teacher",
    "embed_samples",
    "embed_slices",
    "register_teacher",
    "sample_slice_contents",
    "slice_key",
    "teacher_cache",
]
