"""Instructions that steer retrieval: a ControlRetriever-style control branch (issue 22).

- :mod:`~sugar.control.branch`: :class:`ControlBranch` (zero-initialised joins and output
  experts) and :func:`joined` (where its vectors enter the frozen model);
- :mod:`~sugar.control.embed`: query vectors with an instruction;
- :mod:`~sugar.control.mine`: hard negatives per instruction;
- :mod:`~sugar.control.config`, :mod:`~sugar.control.checkpoint`, :mod:`~sugar.control.train`:
  ``sugar train-control``;
- :mod:`~sugar.control.bundle`: the branch a bundle carries.
"""

from sugar.control.branch import ControlBranch, joined
from sugar.control.embed import embed_instructed, instructed, instructed_vectors

__all__ = ["ControlBranch", "embed_instructed", "instructed", "instructed_vectors", "joined"]
