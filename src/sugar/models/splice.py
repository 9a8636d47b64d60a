"""Where images enter the token sequence: the one function that does it (STYLE.md point 3).

Shapes: B batch, T tokens, D width, N images in the batch, K = ``image_tokens`` feature vectors
per image. :mod:`sugar.data.collate` writes K ``<image>`` placeholder ids per image segment;
the vision side turns ``Batch.images`` (batch order) into (N, K, D) features; this function
overwrites the placeholder positions of the (B, T, D) token embeddings with them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["splice_image_features"]


def splice_image_features(
    embeddings: Tensor, input_ids: Tensor, image_features: Tensor, *, image_id: int
) -> Tensor:
    """Place the N images' features, in order, at the ``<image>`` placeholder positions.

    Placeholders are read in row-major order (sample 0 left to right, then sample 1, ...), the
    order of ``Batch.images``; image n fills the n-th run of K consecutive placeholders. Every
    other position keeps its embedding. Differentiable in ``embeddings`` (zero gradient at the
    placeholders) and in ``image_features``; features are cast to the embeddings' dtype.

    Args:
        embeddings: token embeddings. # (B, T, D)
        input_ids: token ids; ``image_id`` marks placeholders. # (B, T)
        image_features: per-image feature vectors, images in batch order. # (N, K, D)
        image_id: the placeholder id (``Tokenizer.image_id``).

    Returns:
        A new tensor. # (B, T, D)

    Raises ``ValueError`` when the number of placeholder positions differs from N * K (the
    message gives both counts), when placeholders do not form runs of K in one row, or on
    shape mismatches.

    >>> ids = torch.tensor([[5, 3, 3, 6], [3, 3, 7, 0]])
    >>> out = splice_image_features(torch.zeros(2, 4, 1), ids, torch.tensor([[[1.0], [2.0]],
    ...                             [[3.0], [4.0]]]), image_id=3)
    >>> out[..., 0].tolist()
    [[0.0, 1.0, 2.0, 0.0], [3.0, 4.0, 0.0, 0.0]]
    """
    if embeddings.dim() != 3 or input_ids.shape != embeddings.shape[:2]:
        raise ValueError(
            f"embeddings {tuple(embeddings.shape)} must be (B, T, D) with input_ids (B, T), "
            f"got input_ids {tuple(input_ids.shape)}"
        )
    if image_features.dim() != 3 or image_features.shape[-1] != embeddings.shape[-1]:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} must be (N, K, D) with "
            f"D = {embeddings.shape[-1]} (the embedding width)"
        )
    images, per_image, width = image_features.shape
    placeholder = input_ids == image_id  # (B, T)
    positions = int(torch.count_nonzero(placeholder))
    if positions != images * per_image:
        raise ValueError(
            f"{positions} image placeholder positions in input_ids but {images * per_image} "
            f"image feature vectors ({images} images x {per_image} tokens each)"
        )
    if images == 0:
        return embeddings.clone()
    # Equal counts can still hide a misplacement (one image with K+1 placeholders, the next
    # with K-1): each image's K flat positions must be consecutive and in one row.
    flat = placeholder.reshape(-1).nonzero().squeeze(1).reshape(images, per_image)  # (N, K)
    length = input_ids.shape[1]
    first, last = flat[:, 0], flat[:, -1]  # (N,)
    runs_ok = (last - first == per_image - 1) & (first // length == last // length)
    if not bool(runs_ok.all()):
        bad = int((~runs_ok).nonzero()[0, 0])
        raise ValueError(
            f"image {bad}: its {per_image} placeholder positions are not one run in one row "
            "(each image needs exactly image_tokens consecutive <image> ids)"
        )
    source = image_features.reshape(images * per_image, width).to(embeddings.dtype)  # (N*K, D)
    return embeddings.masked_scatter(placeholder.unsqueeze(-1), source)
