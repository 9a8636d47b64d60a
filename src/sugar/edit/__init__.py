"""Knowledge editing (issue 23): change what a model answers, one edit at a time, reversibly.

One interface (:class:`~sugar.edit.base.Editor`: ``add``, ``remove``, ``rewrite``) over five
methods at one hidden level (:mod:`sugar.edit.site`, a feed-forward block of the decoder):

- ``ft`` (:mod:`~sugar.edit.finetune`): fine-tune that block on the edit;
- ``context`` (:mod:`~sugar.edit.context`): retrieve the edited fact into the prompt (RAG);
- ``patcher`` (:mod:`~sugar.edit.patcher`): T-Patcher neurons added to the block;
- ``memory`` (:mod:`~sugar.edit.memory`): external key-value memory of fact vectors;
- ``unike`` (:mod:`~sugar.edit.unike`): both memories, scope in a learned semantic space and by
  the edit's key tokens (:mod:`~sugar.edit.keys`), optional truthfulness space
  (:mod:`~sugar.edit.truth`).

Edit sets and their probes: :mod:`sugar.edit.records`; scoring (reliability, generality,
locality after sequential edits): :mod:`sugar.edit.evaluate`; bundles: :mod:`sugar.edit.store`.
"""

from sugar.edit.base import EDITORS, Editor, build_editor
from sugar.edit.records import EditRequest, edit_from_sample, read_edits

__all__ = ["EDITORS", "EditRequest", "Editor", "build_editor", "edit_from_sample", "read_edits"]
