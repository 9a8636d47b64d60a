"""Naive per-pair, per-cell Python references for the alignment kernels (test-only).

Written as directly from the textbook recursions as possible (dicts of cells, scalar torch ops
so autograd gives reference gradients), independent of sugar's implementation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NEG_INF = float("-inf")


def sq_dist(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b) ** 2).sum()


def cos_dist(a: Tensor, b: Tensor) -> Tensor:
    return 1 - (a @ b) / (a.norm() * b.norm())


def cost_matrix(x: Tensor, y: Tensor, metric: str = "sqeuclidean") -> list[list[Tensor]]:
    dist = sq_dist if metric == "sqeuclidean" else cos_dist
    return [[dist(x[i], y[j]) for j in range(len(y))] for i in range(len(x))]


def log_gak_table(phi: list[list[Tensor]], sigma: float) -> Tensor:
    """log M[i, j] for all prefix pairs: M[i, j] = (M[i-1, j] + M[i, j-1] + M[i-1, j-1]) * k."""
    n, m = len(phi), len(phi[0])
    dtype = phi[0][0].dtype
    logm: dict[tuple[int, int], Tensor] = {}
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                logm[i, j] = torch.tensor(0.0 if i == j == 0 else NEG_INF, dtype=dtype)
                continue
            t = phi[i - 1][j - 1] / (2 * sigma**2)
            log_k = -t - torch.log(2 - torch.exp(-t))
            prev = torch.stack([logm[i - 1, j], logm[i, j - 1], logm[i - 1, j - 1]])
            logm[i, j] = log_k + torch.logsumexp(prev, 0)
    return torch.stack(
        [torch.stack([logm[i, j] for j in range(1, m + 1)]) for i in range(1, n + 1)]
    )


def log_gak(x: Tensor, y: Tensor, sigma: float, metric: str = "sqeuclidean") -> Tensor:
    return log_gak_table(cost_matrix(x, y, metric), sigma)[-1, -1]


def soft_dtw(cost: list[list[Tensor]], gamma: float) -> Tensor:
    n, m = len(cost), len(cost[0])
    dtype = cost[0][0].dtype
    r: dict[tuple[int, int], Tensor] = {}
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                r[i, j] = torch.tensor(0.0 if i == j == 0 else math.inf, dtype=dtype)
                continue
            prev = torch.stack([r[i - 1, j], r[i, j - 1], r[i - 1, j - 1]])
            r[i, j] = cost[i - 1][j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return r[n, m]


def dtw(cost: list[list[float]]) -> tuple[float, list[tuple[int, int]]]:
    n, m = len(cost), len(cost[0])
    r = [[math.inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r[i][j] = cost[i - 1][j - 1] + min(r[i - 1][j], r[i][j - 1], r[i - 1][j - 1])
    path = [(n, m)]
    while path[-1] != (1, 1):
        i, j = path[-1]
        options = [
            (r[i - 1][j - 1], (i - 1, j - 1)),
            (r[i - 1][j], (i - 1, j)),
            (r[i][j - 1], (i, j - 1)),
        ]
        path.append(min(options, key=lambda o: o[0])[1])  # first minimum: diagonal, up, left
    return r[n][m], [(i - 1, j - 1) for i, j in reversed(path)]


def normalise(lxy: Tensor, lxx: Tensor, lyy: Tensor, n: int, m: int, rule: str) -> Tensor:
    if rule == "cosine":
        return torch.exp(lxy - (lxx + lyy) / 2)
    if rule == "length":
        return torch.exp(lxy / ((n + m) / 2) - (lxx / n + lyy / m) / 2)
    if rule == "none":
        return torch.exp(lxy)
    raise ValueError(rule)


def standardise_by_length_pair(
    values: list[float], lengths: list[tuple[int, int]], slope: float = 1.0
) -> list[float]:
    """z-score within each unordered length pair, then a logistic of slope * z; singletons
    -> 0.5."""
    groups: dict[tuple[int, int], list[float]] = {}
    for v, (n, m) in zip(values, lengths, strict=True):
        groups.setdefault((min(n, m), max(n, m)), []).append(v)
    out = []
    for v, (n, m) in zip(values, lengths, strict=True):
        g = groups[min(n, m), max(n, m)]
        mean = sum(g) / len(g)
        sd = math.sqrt(sum((u - mean) ** 2 for u in g) / len(g))
        z = (v - mean) / sd if sd > 1e-9 else 0.0
        out.append(1 / (1 + math.exp(-slope * z)))
    return out
