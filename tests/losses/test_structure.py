"""L_d against a direct per-pair computation; gradients, the same-sample switch, the ablations."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from sugar.align import SliceEmbeddings, TypeMedians
from sugar.losses.generative import generative_loss
from sugar.losses.structure import (
    StructureOptions,
    local_kernel,
    predicted_floor,
    predicted_matrix,
    sample_prefixes,
    structure_loss,
    structure_targets,
)


def _options(**changes: Any) -> StructureOptions:
    """Target options with the cosine normalisation and the Triple Kernel these cases were
    worked out for (the library's defaults are ``length_pair_standardised``, without it)."""
    return StructureOptions(**{"gak_normalisation": "cosine", "triple_kernel": True, **changes})


KERNEL = _options(same_sample_target="kernel")


def _random_slices(lengths: list[int], seed: int = 0) -> SliceEmbeddings:
    g = torch.Generator().manual_seed(seed)
    b, s = len(lengths), max(lengths)

    def unit(*shape: int) -> torch.Tensor:
        return torch.nn.functional.normalize(
            torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1
        )

    return SliceEmbeddings(
        image=unit(b, s, 5),
        text=unit(b, s, 4),
        cross=unit(b, s, 3),
        is_text=torch.rand(b, s, generator=g) < 0.5,
        lengths=torch.tensor(lengths),
    )


def _phi(x: SliceEmbeddings, a: int, i: int, b: int, j: int, tk: bool, m: TypeMedians) -> float:
    ta, tb = bool(x.is_text[a, i]), bool(x.is_text[b, j])
    if tk and ta and tb:
        return float(((x.text[a, i] - x.text[b, j]) ** 2).sum()) / m.text
    if tk and not ta and not tb:
        return float(((x.image[a, i] - x.image[b, j]) ** 2).sum()) / m.image
    return float(((x.cross[a, i] - x.cross[b, j]) ** 2).sum()) / m.cross


def _k(phi: float, sigma: float) -> float:
    t = phi / (2 * sigma**2)
    return math.exp(-t) / (2 - math.exp(-t))


def _gak(x: SliceEmbeddings, a: int, n: int, b: int, m: int, sigma: float, tk: bool,
         med: TypeMedians) -> float:  # fmt: skip
    """M[0,0] = 1; M[i,j] = (M[i-1,j] + M[i,j-1] + M[i-1,j-1]) k(x_i, y_j): a plain DP."""
    table = [[0.0] * (m + 1) for _ in range(n + 1)]
    table[0][0] = 1.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            k = _k(_phi(x, a, i - 1, b, j - 1, tk, med), sigma)
            table[i][j] = (table[i - 1][j] + table[i][j - 1] + table[i - 1][j - 1]) * k
    return table[n][m]


def _naive_target(x, picks, sigma, normalisation, tk, med, use_gak, same):  # type: ignore[no-untyped-def]
    out = torch.zeros(len(picks), len(picks), dtype=torch.float64)
    for p, (a, ea) in enumerate(picks):
        for q, (b, eb) in enumerate(picks):
            n, m = ea + 1, eb + 1
            if same == "one" and a == b:
                out[p, q] = 1.0
            elif not use_gak:
                ks = [_k(_phi(x, a, i, b, j, tk, med), sigma) for i in range(n) for j in range(m)]
                out[p, q] = sum(ks) / len(ks)
            else:
                kxy = _gak(x, a, n, b, m, sigma, tk, med)
                kxx, kyy = _gak(x, a, n, a, n, sigma, tk, med), _gak(x, b, m, b, m, sigma, tk, med)
                if normalisation == "cosine":
                    out[p, q] = kxy / math.sqrt(kxx * kyy)
                else:  # length: per-step geometric mean
                    lxy, lxx, lyy = (
                        math.log(kxy) / ((n + m) / 2),
                        math.log(kxx) / n,
                        math.log(kyy) / m,
                    )
                    out[p, q] = math.exp(lxy - (lxx + lyy) / 2)
    return out


@pytest.mark.parametrize(
    ("normalisation", "tk", "use_gak", "same", "medians"),
    [
        ("cosine", True, True, "one", TypeMedians()),
        ("cosine", True, True, "kernel", TypeMedians()),
        ("length", True, True, "kernel", TypeMedians()),
        ("cosine", False, True, "kernel", TypeMedians()),
        ("cosine", True, False, "kernel", TypeMedians()),
        ("cosine", True, True, "kernel", TypeMedians(image=0.7, text=1.3, cross=0.9)),
    ],
)
def test_targets_equal_a_direct_per_pair_computation(
    normalisation: str, tk: bool, use_gak: bool, same: str, medians: TypeMedians
) -> None:
    x = _random_slices([3, 1, 4, 2])
    b, e, _ = sample_prefixes([3, 1, 4, 2], 2, torch.Generator().manual_seed(1))
    picks = list(zip(b.tolist(), e.tolist(), strict=True))
    options = StructureOptions(
        gak_normalisation=normalisation, triple_kernel=tk,  # type: ignore[arg-type]
        use_gak=use_gak, same_sample_target=same,  # type: ignore[arg-type]
    )  # fmt: skip
    got = structure_targets(x, b, e, sigma=0.8, options=options, medians=medians)
    expected = _naive_target(x, picks, 0.8, normalisation, tk, medians, use_gak, same)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


def test_pair_length_bandwidth_per_pair() -> None:
    x = _random_slices([3, 2])
    b, e = torch.tensor([0, 0, 1]), torch.tensor([2, 0, 1])
    got = structure_targets(
        x, b, e, sigma=0.9, options=_options(sigma_mode="pair_length", same_sample_target="kernel")
    )
    for p, (a, ea) in enumerate(zip(b.tolist(), e.tolist(), strict=True)):
        for q, (c, ec) in enumerate(zip(b.tolist(), e.tolist(), strict=True)):
            n, m = ea + 1, ec + 1

            def s(u: int, v: int) -> float:
                return 0.9 * math.sqrt((u + v) / 2)

            kxy = _gak(x, a, n, c, m, s(n, m), True, TypeMedians())
            kxx = _gak(x, a, n, a, n, s(n, n), True, TypeMedians())
            kyy = _gak(x, c, m, c, m, s(m, m), True, TypeMedians())
            assert float(got[p, q]) == pytest.approx(kxy / math.sqrt(kxx * kyy), rel=1e-9)


@pytest.mark.parametrize("sigma_mode", ["fixed", "pair_length"])
def test_target_slope_sharpens_or_flattens_only_the_logistic(sigma_mode: str) -> None:
    x = _random_slices([3, 1, 4, 2, 3])
    b, e, _ = sample_prefixes([3, 1, 4, 2, 3], 2, torch.Generator().manual_seed(2))
    lps = StructureOptions(sigma_mode=sigma_mode, target_slope=1.0)  # type: ignore[arg-type]
    one = structure_targets(x, b, e, sigma=0.9, options=lps)
    half = structure_targets(x, b, e, sigma=0.9, options=replace(lps, target_slope=0.5))
    other = b[:, None] != b[None, :]
    torch.testing.assert_close(half[other], torch.sigmoid(0.5 * torch.logit(one[other])))
    assert (half[~other] == 1).all() and (one[~other] == 1).all()
    assert half[other].std() < one[other].std()
    # a normalisation without a logistic ignores the slope
    cosine = _options(sigma_mode=sigma_mode)
    torch.testing.assert_close(
        structure_targets(x, b, e, sigma=0.9, options=replace(cosine, target_slope=0.5)),
        structure_targets(x, b, e, sigma=0.9, options=cosine),
    )


def test_same_sample_switch_changes_only_same_sample_entries() -> None:
    x = _random_slices([3, 3, 2])
    b, e, _ = sample_prefixes([3, 3, 2], 2, torch.Generator().manual_seed(0))
    one = structure_targets(x, b, e, sigma=1.0, options=_options(same_sample_target="one"))
    kernel = structure_targets(x, b, e, sigma=1.0, options=KERNEL)
    same = b[:, None] == b[None, :]
    assert torch.equal(one[~same], kernel[~same])
    assert (one[same] == 1).all()
    assert (kernel[same] < 1).any()  # different prefixes of one sample are not identical


def test_ablations_change_what_they_claim() -> None:
    x = _random_slices([3, 2, 3])
    b, e = torch.tensor([0, 1, 2, 2]), torch.tensor([2, 1, 0, 2])
    base = structure_targets(x, b, e, sigma=1.0, options=KERNEL)
    # w/o TK (the library's default) compares every slice pair by cross-modal vectors: the same
    # as the Triple Kernel on data where every slice is an image whose image vector is its
    # cross-modal vector
    no_tk = structure_targets(x, b, e, sigma=1.0, options=replace(KERNEL, triple_kernel=False))
    default = replace(StructureOptions(), gak_normalisation="cosine", same_sample_target="kernel")
    torch.testing.assert_close(structure_targets(x, b, e, sigma=1.0, options=default), no_tk)
    assert not torch.allclose(base, no_tk)
    all_images = torch.zeros_like(x.is_text)
    relabelled = SliceEmbeddings(x.cross, x.text, x.cross, all_images, x.lengths)
    torch.testing.assert_close(
        structure_targets(relabelled, b, e, sigma=1.0, options=KERNEL), no_tk
    )
    # w/o GAK: single-slice pairs need no DP, so their entries agree with the GAK target
    no_gak = structure_targets(x, b, e, sigma=1.0, options=replace(KERNEL, use_gak=False))
    single = (e == 0)[:, None] & (e == 0)[None, :]
    torch.testing.assert_close(no_gak[single], base[single])
    assert not torch.allclose(no_gak, base)


def test_targets_carry_no_gradient_and_the_loss_reaches_only_r() -> None:
    x = _random_slices([2, 3])
    x.image.requires_grad_(True)
    b, e, keep = sample_prefixes([2, 3], 2, torch.Generator().manual_seed(0))
    target = structure_targets(x, b, e, sigma=1.0, options=_options())
    assert not target.requires_grad
    r = torch.nn.functional.normalize(torch.randn(len(b), 6, dtype=torch.float64), dim=-1)
    r.requires_grad_(True)
    loss = structure_loss(predicted_matrix(r, "local", 1.0), target, keep)["structure_loss"]
    loss.backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
    assert x.image.grad is None


def test_masked_prefixes_do_not_count() -> None:
    predicted = torch.tensor([[1.0, 0.5, 9.0], [0.5, 1.0, 9.0], [9.0, 9.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    keep = torch.tensor([True, True, False])
    out = structure_loss(predicted, target, keep, reduction="paper")
    assert float(out["structure_loss"]) == pytest.approx(0.5 / 2)  # two 0.25 errors / n=2
    assert float(out["structure_mse"]) == pytest.approx(0.5 / 4)
    out = structure_loss(predicted, target, keep, reduction="mean")
    assert float(out["structure_loss"]) == pytest.approx(0.5 / 4)


def test_predicted_kernels_and_the_floor() -> None:
    r = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    cos = predicted_matrix(r, "cosine")
    torch.testing.assert_close(cos, r @ r.T)
    local = predicted_matrix(r, "local", 0.7)
    phi = torch.cdist(r, r) ** 2
    torch.testing.assert_close(local, local_kernel(phi, 0.7), atol=1e-12, rtol=1e-9)
    assert (local >= predicted_floor(0.7) - 1e-12).all()
    assert predicted_matrix(-r[:1].repeat(2, 1) * torch.tensor([[1.0], [-1.0]]), "local", 0.7)[
        0, 1
    ] == pytest.approx(predicted_floor(0.7))
    sigma = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    predicted_matrix(r, "learned", sigma).sum().backward()
    assert sigma.grad is not None and sigma.grad != 0


def test_prefix_sampling_fixed_count_final_first_duplicates_masked() -> None:
    b, e, keep = sample_prefixes([1, 4, 2], 3, torch.Generator().manual_seed(3))
    assert b.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert e[::3].tolist() == [0, 3, 1]  # the final slice first
    assert keep.tolist()[:3] == [True, False, False]
    for sample in range(3):
        ends = e[b == sample][keep[b == sample]].tolist()
        assert len(ends) == len(set(ends))
    assert ((e[3:6] >= 0) & (e[3:6] <= 3)).all()
    with pytest.raises(ValueError, match="prefixes_per_sample=0"):
        sample_prefixes([2], 0)


def test_generative_loss_is_the_mean_over_supervised_tokens() -> None:
    logits = torch.randn(2, 4, 7, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, 4, -100], [-100, -100, 6, 1]])
    manual = []
    for row in range(2):
        for t in range(1, 4):
            if labels[row, t] != -100:
                manual.append(-torch.log_softmax(logits[row, t - 1], -1)[labels[row, t]])
    out = generative_loss(logits, labels)
    assert float(out["lm_loss"]) == pytest.approx(float(torch.stack(manual).mean()))
    assert int(out["lm_tokens"]) == 4
    empty = generative_loss(logits, torch.full((2, 4), -100))
    assert float(empty["lm_loss"]) == 0.0


def test_sample_reduction_is_the_mean_of_each_samples_mean_and_combines_by_units() -> None:
    logits = torch.randn(3, 5, 7, dtype=torch.float64)
    labels = torch.tensor(
        [[-100, 3, 4, 5, 6], [-100, -100, -100, -100, 1], [-100, -100, -100, -100, -100]]
    )
    rows = []
    for row in range(2):  # the third row supervises nothing: it does not count
        nll = [
            -torch.log_softmax(logits[row, t - 1], -1)[labels[row, t]]
            for t in range(1, 5)
            if labels[row, t] != -100
        ]
        rows.append(torch.stack(nll).mean())
    out = generative_loss(logits, labels, "sample")
    assert float(out["lm_loss"]) == pytest.approx(float(torch.stack(rows).mean()))
    assert (int(out["lm_tokens"]), int(out["lm_units"])) == (5, 2)
    token = generative_loss(logits, labels, "token")
    assert float(token["lm_loss"]) != pytest.approx(float(out["lm_loss"]))
    # two halves combined by their units give the whole batch (what chunks and ranks do)
    halves = [generative_loss(logits[i : i + 1], labels[i : i + 1], "sample") for i in (0, 1)]
    combined = sum(h["lm_loss"] * h["lm_units"] for h in halves) / 2
    assert float(combined) == pytest.approx(float(out["lm_loss"]))
    assert float(generative_loss(logits, torch.full((3, 5), -100), "sample")["lm_loss"]) == 0.0
    with pytest.raises(ValueError, match="reduction='mean'"):
        generative_loss(logits, labels, "mean")  # type: ignore[arg-type]


def test_groups_extend_the_same_sample_rule_to_views_of_one_source() -> None:
    x = _random_slices([1, 1, 2])
    b, e = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1])
    plain = structure_targets(x, b, e, sigma=1.0, options=_options())
    grouped = structure_targets(
        x, b, e, sigma=1.0, options=_options(), groups=torch.tensor([0, 0, 1])
    )
    assert plain[0, 1] < 1 and grouped[0, 1] == 1 and grouped[1, 0] == 1
    assert grouped[0, 2] == plain[0, 2]
