"""sugar.align.gak_prefix_gram: the unpadded prefix Gram against the padded prefix table and the
naive per-prefix GAK, values and gradients; and L_d's targets, which it now computes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from sugar import align
from sugar.losses.structure import StructureOptions, structure_targets
from tests.align import naive

NORMALISATIONS = ["cosine", "length", "length_pair_standardised", "none"]
LENGTHS = [1, 3, 1, 5, 2, 1, 3]


def _unit(generator: torch.Generator, *shape: int, dtype: torch.dtype) -> Tensor:
    x = torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)
    return x / x.norm(dim=-1, keepdim=True)


def _slices(lengths: list[int] = LENGTHS, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, s = len(lengths), max(lengths)
    return align.SliceEmbeddings(
        image=_unit(g, b, s, 6, dtype=dtype),
        text=_unit(g, b, s, 4, dtype=dtype),
        cross=_unit(g, b, s, 3, dtype=dtype),
        is_text=torch.rand(b, s, generator=g) > 0.5,
        lengths=torch.tensor(lengths),
    )


def _padded_as_gram(table: Tensor, lengths: list[int]) -> Tensor:
    """(B, B, S, S) padded prefix table -> its valid cells as a (T, T) matrix."""
    sample = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    step = torch.cat([torch.arange(n) for n in lengths])
    return table[sample[:, None], sample[None, :], step[:, None], step[None, :]]


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
@pytest.mark.parametrize("triple_kernel", [True, False])
def test_slice_embeddings_equal_the_padded_prefix_table(
    normalisation: str, triple_kernel: bool
) -> None:
    slices = _slices()
    medians = align.TypeMedians(image=1.1, text=0.9, cross=1.3)
    kwargs = dict(sigma=0.8, normalisation=normalisation, triple_kernel=triple_kernel)
    padded = align.cdist_gak_prefixes(slices, medians=medians, **kwargs)  # type: ignore[arg-type]
    gram = align.gak_prefix_gram(slices, medians=medians, **kwargs)  # type: ignore[arg-type]
    assert gram.shape == (sum(LENGTHS), sum(LENGTHS))
    torch.testing.assert_close(gram, _padded_as_gram(padded, LENGTHS), rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_padded_tensors_equal_separate_calls_on_each_prefix_pair(metric: str) -> None:
    g = torch.Generator().manual_seed(1)
    lengths = [2, 1, 4]
    x = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    x[1, 1:] = 1e6  # padding never enters a value
    gram = align.gak_prefix_gram(x, sigma=1.3, lengths=lengths, metric=metric)
    offsets = align.prefix_offsets(torch.tensor(lengths)).tolist()
    for a, na in enumerate(lengths):
        for b, nb in enumerate(lengths):
            for i in range(na):
                for j in range(nb):
                    xp, yp = x[a, : i + 1], x[b, : j + 1]
                    want = naive.normalise(
                        naive.log_gak(xp, yp, 1.3, metric), naive.log_gak(xp, xp, 1.3, metric),
                        naive.log_gak(yp, yp, 1.3, metric), i + 1, j + 1, "cosine",
                    )  # fmt: skip
                    got = gram[offsets[a] + i, offsets[b] + j]
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_float32_lists_and_equal_lengths_match_the_padded_table() -> None:
    g = torch.Generator().manual_seed(2)
    for lengths in ([3, 3, 3], [1], [2, 6, 1, 1]):
        xs = [torch.randn(n, 5, generator=g) for n in lengths]
        gram = align.gak_prefix_gram(xs, sigma=2.0, normalisation="length_pair_standardised")
        padded = align.cdist_gak_prefixes(xs, sigma=2.0, normalisation="length_pair_standardised")
        assert gram.dtype == torch.float32
        torch.testing.assert_close(gram, _padded_as_gram(padded, lengths), rtol=0, atol=2e-6)


def test_gradients_equal_the_padded_tables() -> None:
    g = torch.Generator().manual_seed(3)
    lengths = [2, 1, 3]
    x = torch.randn(3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(sum(lengths), sum(lengths), generator=g, dtype=torch.float64)
    gram = align.gak_prefix_gram(x, sigma=1.1, lengths=lengths)
    (ours,) = torch.autograd.grad((gram * weights).sum(), [x])
    padded = _padded_as_gram(align.cdist_gak_prefixes(x, sigma=1.1, lengths_x=lengths), lengths)
    (reference,) = torch.autograd.grad((padded * weights).sum(), [x])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    assert ours[1, 1:].abs().max() == 0 and ours[0, 2:].abs().max() == 0  # padding: exactly 0


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_structure_targets_equal_the_padded_computation(normalisation: str) -> None:
    slices = _slices(seed=4)
    sample = torch.tensor([0, 1, 1, 3, 3, 4, 6, 2, 5, 6])
    step = torch.tensor([0, 0, 2, 1, 4, 1, 2, 0, 0, 0])
    options = StructureOptions(gak_normalisation=normalisation, triple_kernel=True)  # type: ignore[arg-type]
    targets = structure_targets(slices, sample, step, sigma=0.9, options=options)
    padded = align.cdist_gak_prefixes(
        slices,
        sigma=0.9,
        normalisation=normalisation,  # type: ignore[arg-type]
        triple_kernel=True,
        slope=options.target_slope if normalisation == "length_pair_standardised" else 1.0,
    )
    want = padded[sample[:, None], sample[None, :], step[:, None], step[None, :]]
    want = torch.where(sample[:, None] == sample[None, :], torch.ones_like(want), want)
    torch.testing.assert_close(targets, want, rtol=0, atol=1e-12)


def test_bad_input_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="sigma"):
        align.gak_prefix_gram([torch.zeros(2, 1)], sigma=0.0)
    with pytest.raises(ValueError, match="sequence 0 of X is empty"):
        align.gak_prefix_gram(torch.zeros(2, 3, 1), lengths=[0, 2])
    with pytest.raises(ValueError, match="metric"):
        align.gak_prefix_gram(_slices(), metric="sqeuclidean")
