"""Alignment kernels: DTW, soft-DTW and Global Alignment Kernels, batched and differentiable.

tslearn's grammar (``gak``, ``cdist_gak``, ``soft_dtw``, ``cdist_soft_dtw``, ``sigma_gak``) on
torch tensors: padded batches with lengths or lists of sequences, float32 or float64, log space
throughout, a custom backward, padding that never changes a value and gets zero gradient. Plus
what Sugar needs and no library offers: the log-GAK of every prefix pair from one DP per pair,
the normalisations of METHOD.md section 3, and the Triple-Kernel ground distance over separate
uni-modal and cross-modal teacher vectors (:class:`SliceEmbeddings`).
"""

from sugar.align.dtw import cdist_dtw, dtw, dtw_from_cost
from sugar.align.gak import (
    cdist_gak,
    cdist_gak_prefixes,
    cdist_log_gak,
    cdist_log_gak_prefixes,
    gak,
    log_gak,
    log_gak_from_cost,
    normalise_log_gak,
)
from sugar.align.kernels import (
    SliceEmbeddings,
    TypeMedians,
    auto_delta,
    cdist_cost,
    local_log_kernel,
    prefix_mean_local_kernel,
    sigma_gak,
    triple_kernel_cost,
    triple_kernel_medians,
)
from sugar.align.prefix_gram import gak_prefix_gram, prefix_offsets
from sugar.align.soft_dtw import cdist_soft_dtw, soft_dtw, soft_dtw_divergence, soft_dtw_from_cost

__all__ = [
    "SliceEmbeddings",
    "TypeMedians",
    "auto_delta",
    "cdist_cost",
    "cdist_dtw",
    "cdist_gak",
    "cdist_gak_prefixes",
    "cdist_log_gak",
    "cdist_log_gak_prefixes",
    "cdist_soft_dtw",
    "dtw",
    "dtw_from_cost",
    "gak",
    "gak_prefix_gram",
    "local_log_kernel",
    "log_gak",
    "log_gak_from_cost",
    "normalise_log_gak",
    "prefix_mean_local_kernel",
    "prefix_offsets",
    "sigma_gak",
    "soft_dtw",
    "soft_dtw_divergence",
    "soft_dtw_from_cost",
    "triple_kernel_cost",
    "triple_kernel_medians",
]
