"""A persistent vector index with string ids and JSON metadata: exact (torch), FAISS and Milvus
backends.

>>> from sugar.index import build_index
>>> index = build_index("exact", dim=2, model_identity="demo-model")
>>> index.add(["a"], [[0.0, 1.0]], [{"text": "hello"}])
>>> index.search([[0.0, 1.0]], k=5, with_metadata=True)
[[{'id': 'a', 'score': 1.0, 'metadata': {'text': 'hello'}}]]

See :mod:`sugar.index.base` for the contract and the on-disk format, :mod:`sugar.index.exact`,
:mod:`sugar.index.faiss_index` and :mod:`sugar.index.milvus_index` for each backend's storage;
:mod:`sugar.index.shards` for sharded embedding under torchrun.
"""

from sugar.index.base import (
    ChecksumError,
    Index,
    IndexFormatError,
    ModelIdentityError,
    build_index,
    prefix_entry,
)
from sugar.index.exact import ExactIndex
from sugar.index.faiss_index import FlatIndex, HNSWIndex, IVFIndex
from sugar.index.milvus_index import MilvusIndex

__all__ = [
    "ChecksumError",
    "ExactIndex",
    "FlatIndex",
    "HNSWIndex",
    "IVFIndex",
    "Index",
    "IndexFormatError",
    "MilvusIndex",
    "ModelIdentityError",
    "build_index",
    "prefix_entry",
]
