"""Embeddings from a trained model: samples, texts and images -> unit vectors (METHOD.md section 6).

Shapes: B samples, n prefixes, P projector width.

A sample's embedding is its final prefix's ``r`` (:func:`sugar.models.prefix.embed_prefixes`,
the function the structure loss uses, so training and retrieval see bit-identical vectors);
``prefixes=True`` gives one vector per slice end from the same single forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sugar.data.schema import Sample, Segment
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector, all_prefixes, embed_prefixes

__all__ = [
    "embed_samples",
    "embed_texts",
    "embed_vectors",
    "encode_document",
    "encode_query",
    "save_vectors",
]


@torch.no_grad()
def embed_samples(
    model: MLLM,
    projector: RetrievalProjector,
    samples: Sequence[Sample],
    root: str | Path,
    *,
    batch_size: int = 32,
    image_pool: Literal["mean", "last"] = "mean",
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    prefixes: bool = False,
    progress: bool = False,
) -> Tensor | list[Tensor]:
    """Unit vectors of ``samples``: (B, P), or with ``prefixes=True`` a list of (S_b, P), one
    row per slice end of sample b, in slice order. Always float32 on the CPU, wherever the
    model runs (indexes, metrics and files take them as they are)."""
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        starts = range(0, len(samples), batch_size)
        for start in tqdm(starts, desc="embed", disable=not progress, unit="batch"):
            chunk = samples[start : start + batch_size]
            batch = model.collate(chunk, root, slice_text_by=slice_text_by)
            _check_sliced(chunk, batch.spans)
            hidden = model(batch).hidden
            if prefixes:
                b, e = all_prefixes(batch.spans)
                r = embed_prefixes(hidden, batch.spans, b, e, projector, image_pool)
                out.extend(r.float().cpu().split([len(spans) for spans in batch.spans]))
            else:
                b = torch.arange(len(chunk))
                e = torch.tensor([len(spans) - 1 for spans in batch.spans])
                r = embed_prefixes(hidden, batch.spans, b, e, projector, image_pool)
                out.append(r.float().cpu())
    finally:
        model.train(was_training)
    if prefixes:
        return out
    if not out:
        return torch.zeros(0, projector.dim)
    return torch.cat(out)


def _check_sliced(samples: Sequence[Sample], spans: Sequence[Sequence[Any]]) -> None:
    """Refuse a sample with nothing to embed: no image and no text with a visible character
    (a zero-width space, a soft hyphen alone), naming it, rather than failing deep inside."""
    for sample, sample_spans in zip(samples, spans, strict=True):
        if not sample_spans:
            texts = [segment.text for segment in sample.segments if segment.text is not None]
            raise ValueError(
                f"sample {sample.id!r}: nothing to embed: no image, and its text {texts!r} has "
                "no visible character (a letter, digit, punctuation mark or symbol)"
            )


def embed_vectors(
    model: MLLM,
    projector: RetrievalProjector,
    samples: Sequence[Sample],
    root: str | Path,
    **options: Any,
) -> Tensor:
    """One vector per sample (its final prefix): :func:`embed_samples` without ``prefixes``,
    typed as the (B, P) tensor it returns. ``options``: its keyword arguments."""
    out = embed_samples(model, projector, samples, root, **options)
    assert isinstance(out, Tensor)
    return out


def _as_samples(items: Sequence[str | Sample], kind: str) -> list[Sample]:
    """Texts become one-segment context samples (``kind-i`` ids); samples stay as they are."""
    return [
        item if isinstance(item, Sample) else Sample(f"{kind}-{i}", [Segment.text_(item)])
        for i, item in enumerate(items)
    ]


def embed_texts(
    model: MLLM, projector: RetrievalProjector, texts: Sequence[str], **options: Any
) -> Tensor:
    """Unit vectors of plain texts (each a one-segment context sample). # (B, P)"""
    return embed_vectors(model, projector, _as_samples(texts, "text"), ".", **options)


def encode_query(
    model: MLLM,
    projector: RetrievalProjector,
    queries: Sequence[str | Sample],
    root: str | Path = ".",
    *,
    instruction: str | None = None,
    **options: Any,
) -> Tensor:
    """Query vectors, in the spirit of sentence-transformers' ``encode_query``. # (B, P)

    A query is a text or a sample (e.g. a question with its image). ``instruction`` (off by
    default) is prepended as a context text segment, as instruction-tuned embedders do.
    **Off-distribution**: Sugar's training never shows instructions, so with this backbone an
    instruction changes the vectors in untrained ways; measure before using one.
    """
    samples = _as_samples(queries, "query")
    if instruction:
        samples = [Sample(s.id, [Segment.text_(instruction), *s.segments], s.task) for s in samples]
    return embed_vectors(model, projector, samples, root, **options)


def encode_document(
    model: MLLM,
    projector: RetrievalProjector,
    documents: Sequence[str | Sample],
    root: str | Path = ".",
    **options: Any,
) -> Tensor:
    """Document vectors (texts or samples), no instruction. # (B, P)

    Queries and documents share one embedding space (Sugar trains one projector): this is
    :func:`embed_samples` on the documents, named for symmetry with :func:`encode_query`.
    """
    return embed_vectors(model, projector, _as_samples(documents, "document"), root, **options)


def save_vectors(path: str | Path, ids: Sequence[str], vectors: Any) -> Path:
    """Write ``ids`` and their ``vectors`` (N, P) float32 as one ``.npz`` (arrays ``ids``,
    ``vectors``), atomically (:mod:`sugar.io`); what ``sugar embed --out`` writes."""
    import io

    import numpy as np

    from sugar.io import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), vectors=vectors)
    return atomic_write_bytes(path, buffer.getvalue())
