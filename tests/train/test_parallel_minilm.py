"""Both data-parallel engines (``train.parallel`` ``ddp`` and ``fsdp2``) on the built-in
``minilm`` family, the demo's model, in float32 and under bfloat16 autocast (``model.autocast``;
``auto`` is bfloat16 on the demo's CPU, AVX-512 BF16): two gloo processes against one process
over the same global batch (L_g, L_d with a learned bandwidth, InfoNCE, a retrieval batch).

The model is the installed all-MiniLM-L6-v2 trunk (as ``tests/models/test_minilm.py`` uses it,
nothing downloaded) cut to its first 2 blocks. Its width (384) and its whole 30,522-row word
embedding stay: that table is where this family differs from the tiny model. Its gradient is
sparse (one entry per input lookup and per row of the tied head, which scores the corpus output
vocabulary only); DDP all-reduces the sparse gradient and the loop densifies it, FSDP2 makes the
table dense before sharding (``sugar.train.fsdp``).

- float32: float32 sums run in another order (ranks, all-reduces, reduce-scatters), so each
  gradient must lie within 5e-5 of its own norm (+ 1e-6 for the key biases, whose gradient is
  an analytic zero: softmax ignores them); measured 8.6e-6, where a wrong row or a doubled
  gradient is off by O(1). Not element by element: a sum of 384-wide products that cancels to
  near zero carries an absolute error, not a relative one (measured: an element 2.7e-4 off,
  relatively). The AdamW step is compared where the gradient decides it: a first AdamW step
  moves each weight by about ``lr * sign(gradient)``, so an element whose gradient lies within
  float32 noise of zero moves either way (measured: 0.019 on an adapter weight, lr 1e-2); where
  ``|gradient| > 1e-4 * max |gradient|`` of its tensor, or is exactly zero (rows of the word
  table no lookup reached), the steps agree within 1e-6 (measured 6e-8), and that is over 95 %
  of each tensor's elements (the key biases, all noise, are left out).
- bfloat16: exact parity is impossible: each rank's products round to bfloat16 on its own share
  (other padded lengths, partial sums over other rows). The tolerance is the bfloat16 noise
  measured in the same test: ``noise`` = distance between one process's bfloat16 and float32
  gradients. Two ranks must lie within 2 ``noise`` of one process's bfloat16 gradients over all
  tensors together and within 3 ``noise`` per tensor, their losses and gradient norm within one
  bfloat16 unit (2**-8) relative. Measured here: 0.24 ``noise`` over all tensors, at most 0.97
  per tensor (the key biases, whose gradient is all noise), losses within 5.3e-4; with another
  output vocabulary (an earlier version of this batch) 0.60 and 1.41 (the temperature), hence
  the margins. The checks can fail: with the loss not multiplied by the world size (DDP's
  average left as it is) or with a gather whose backward sums the ranks' gradients
  (``torch.distributed.nn.functional.all_gather`` while every rank computes the same global
  loss), the gradients lie 32.5 and 64.9 ``noise`` away. ``pytest -rP`` prints these figures.
  The AdamW step is compared in float32 only (in bfloat16 it would compare the signs of
  rounding noise).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import sugar.train.objective as objective_module
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.losses import LossWeights, StructureOptions
from sugar.models.minilm import MiniLMMLLM
from sugar.train.distributed import DataParallel, Shard
from sugar.train.loop import densify_gradients
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair
from sugar.train.run import parameter_groups
from tests.train.gloo_ranks import on_two_gloo_ranks

BLOCKS = 2
"""Trunk blocks kept of the six (each its own FSDP2 group)."""
OPTIONS = {
    "image_size": 64, "grid": 1, "feature_cache": None, "dropout": 0.0, "image_dropout": 0.0,
    "max_positions": 128,
}  # fmt: skip
"""No dropout: a rank draws other masks than one process would."""
ENGINES = ("ddp", "fsdp2")
MUTATIONS = ("unscaled", "summed-gather")
"""The breaks the checks must catch (module doc), run under DDP: the loss scaling and the gather
are the engines' shared code (``DataParallel.forward_backward``, ``gather_with_grad``)."""
PARTS = ("loss", "lm_loss", "structure_loss", "contrastive_loss")
WORD_TABLE = "trunk.embeddings.word_embeddings.weight"


def _sources(world_root: Path) -> tuple[list[Sample], list[Sample]]:
    """(L_g's micro-batch: 4 captions, the retrieval micro-batch: 4 caption and 2 story
    pairs)."""
    stories = read_samples(world_root / "story" / "train.jsonl", world_root)[:2]
    captions = read_samples(world_root / "caption" / "train.jsonl", world_root)[:4]
    return captions, [view for source in captions + stories for view in retrieval_pair(source)]


def _template(world_root: Path) -> MiniLMMLLM:
    """The model every case copies: the corpus output vocabulary of the captions and stories."""
    captions, retrieval = _sources(world_root)
    texts = [s.text for sample in captions + retrieval for s in sample.segments if s.text]
    torch.manual_seed(0)
    model = MiniLMMLLM.build(texts, OPTIONS, {})
    del model.trunk.encoder.layer[BLOCKS:]
    model.trunk.config.num_hidden_layers = BLOCKS
    model.prepare(captions, world_root)
    return model


def _summed_gather(tensor: Tensor, shard: Shard) -> Tensor:
    """A wrong gather-with-gradient: its backward sums every rank's gradient of the gathered
    rows, so a loss that every rank computes whole counts ``world`` times."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in torch 2.13, still the usual choice
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(tensor)) if shard.active else tensor


def _whole(tensor: Tensor) -> Tensor:
    full = getattr(tensor, "full_tensor", None)  # a DTensor: a collective, in the same order
    return (full() if full is not None else tensor).detach().clone()


def _run(
    template: MiniLMMLLM, world_root: Path, engine: str, autocast: str, shard: Shard | None,
    mutation: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One forward-backward of the global batch on ``shard`` (None: one process), the loop's
    densify and clip calls, one AdamW step: the losses, gradient norm, gradients, parameters
    after the step (float32 only), and how the word table's gradient travelled."""
    model = copy.deepcopy(template)
    model.spec["autocast"] = autocast  # what MiniLMMLLM reads at each forward
    samples, retrieval = _sources(world_root)
    torch.manual_seed(1)  # the retrieval projector's initialisation
    options = StructureOptions(
        gak_normalisation="cosine", projector_dim=8, prefixes_per_sample=2,
        same_sample_target="kernel", predicted_kernel="learned",
    )  # fmt: skip
    from tests.train.fake_teacher import FakeTeacher

    objective = SugarObjective(
        model.hidden_size, LossWeights(alpha=1.0, contrastive=1.0), options, delta=0.9,
        teacher=FakeTeacher(),
    )  # fmt: skip
    parallel = DataParallel(
        model, objective, shard or Shard(), engine=engine,  # type: ignore[arg-type]
        layers=model.decoder_layers(),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(5)
    gather = objective_module.gather_with_grad
    if mutation == "summed-gather":
        objective_module.gather_with_grad = _summed_gather  # type: ignore[assignment]
    try:
        parts = parallel.forward_backward(
            lambda model, objective: objective(
                model, samples, world_root, generator, shard, retrieval
            ),
            scale=1 / shard.world if mutation == "unscaled" and shard else 1.0,
        )
    finally:
        objective_module.gather_with_grad = gather
    optimiser = torch.optim.AdamW(parameter_groups(model, [objective], 0.1, 1e-2), lr=1e-2)
    trainable = [p for group in optimiser.param_groups for p in group["params"]]
    table = model.trunk.embeddings.word_embeddings
    sparse = bool(table.weight.grad is not None and table.weight.grad.is_sparse)
    rows = 0
    if sparse:
        assert table.weight.grad is not None
        rows = int(table.weight.grad.coalesce().indices().unique().numel())
    densify_gradients(trainable)
    norm = parallel.clip_gradients(trainable, float("inf"))
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    grads = {n: _whole(p.grad) for n, p in named if p.requires_grad and p.grad is not None}
    optimiser.step()
    return {
        "losses": {name: parts[name].detach() for name in PARTS},
        "grad_norm": norm.detach(),
        "grads": grads,
        "after": {n: _whole(p) for n, p in named} if autocast == "none" else {},
        "sparse_gradient": sparse,
        "gradient_rows": rows,
        "table_sparse": table.sparse,
    }


def _on_rank(rank: int, world_root: str) -> dict[str, Any]:
    root = Path(world_root)
    template = _template(root)
    results: dict[str, Any] = {}
    for engine in ENGINES:
        shard = Shard(rank, 2, lockstep=engine == "fsdp2")
        results[engine] = _run(template, root, engine, "none", shard)
        results[f"{engine}-bfloat16"] = _run(template, root, engine, "bfloat16", shard)
    shard = Shard(rank, 2)
    for mutation in MUTATIONS:
        results[mutation] = _run(template, root, "ddp", "bfloat16", shard, mutation)
    return results


def _distance(a: dict[str, Tensor], b: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([(a[n] - b[n]).flatten() for n in names]).norm()


def bfloat16_check(
    run: dict[str, Any], single: dict[str, Any], reference: dict[str, Any]
) -> tuple[list[str], dict[str, float]]:
    """(the checks a bfloat16 run on two ranks fails against ``single``, one process in
    bfloat16, with ``reference``, one process in float32, giving the bfloat16 noise (module
    doc); the figures: errors in units of that noise, the largest relative loss difference)."""
    grads, exact, rounded = run["grads"], reference["grads"], single["grads"]
    if grads.keys() != rounded.keys():
        return [f"gradients of {sorted(grads.keys() ^ rounded.keys())}"], {}
    names = sorted(rounded)
    failures = []
    noise = float(_distance(rounded, exact, names))
    error = float(_distance(grads, rounded, names))
    figures = {"all gradients / noise": error / noise, "worst tensor / its noise": 0.0}
    if error > 2 * noise:
        failures.append(f"all gradients: {error:.3g} > 2 x bfloat16 noise {noise:.3g}")
    for name in names:
        noise = float((rounded[name] - exact[name]).norm())
        error = float((grads[name] - rounded[name]).norm())
        if error > 3 * noise + 1e-7:  # + 1e-7: a tensor bfloat16 left unchanged
            failures.append(f"{name}: {error:.3g} > 3 x bfloat16 noise {noise:.3g}")
        if noise > 1e-7:
            figures["worst tensor / its noise"] = max(
                figures["worst tensor / its noise"], error / noise
            )
    pairs = [(float(run["losses"][n]), float(single["losses"][n]), n) for n in PARTS]
    pairs.append((float(run["grad_norm"]), float(single["grad_norm"]), "grad_norm"))
    figures["losses, relative"] = 0.0
    for value, expected, name in pairs:  # one bfloat16 unit, 2**-8, relative
        difference = abs(value - expected) / abs(expected)
        figures["losses, relative"] = max(figures["losses, relative"], difference)
        if difference > 2**-8:
            failures.append(f"{name}: {value} vs {expected}")
    return failures, figures


def _close(label: str) -> Callable[[str], str]:
    return lambda message: f"{label}: {message}"


@pytest.mark.slow
def test_minilm_on_two_gloo_processes_equals_one_process_in_float32_and_bfloat16(
    loop_world: Path, tmp_path: Path
) -> None:
    two = on_two_gloo_ranks(_on_rank, str(loop_world), tmp_path=tmp_path)
    template = _template(loop_world)
    single = _run(template, loop_world, "ddp", "none", None)
    rounded = _run(template, loop_world, "ddp", "bfloat16", None)

    # the word table's path: sparse lookups of inputs and of the corpus head's rows in one
    # process and under DDP; dense under FSDP2
    assert template.output_vocab_size < template.tokenizer.vocab_size
    assert single["sparse_gradient"] and single["gradient_rows"] > template.output_vocab_size
    assert two["ddp"]["sparse_gradient"] and two["ddp"]["table_sparse"]
    assert not two["fsdp2"]["sparse_gradient"] and not two["fsdp2"]["table_sparse"]
    assert WORD_TABLE in single["grads"]

    for engine in ENGINES:
        run = two[engine]  # float32 (module doc)
        for name, value in single["losses"].items():
            torch.testing.assert_close(run["losses"][name], value, msg=_close(f"{engine} {name}"))
        torch.testing.assert_close(run["grad_norm"], single["grad_norm"], rtol=1e-5, atol=0)
        assert run["grads"].keys() == single["grads"].keys(), engine
        worst = {"gradient, relative": 0.0, "AdamW step where decided": 0.0}
        for name, grad in single["grads"].items():
            error = float((run["grads"][name] - grad).norm())
            assert error <= 5e-5 * float(grad.norm()) + 1e-6, (engine, name, error)
            if float(grad.norm()) <= 1e-6:  # the key biases: their gradient is all noise
                continue
            step = run["after"][name] - single["after"][name]  # AdamW, lr 1e-2 (trunk 1e-3)
            decided = (grad.abs() > 1e-4 * grad.abs().max()) | (grad == 0)
            assert float(step[decided].abs().max()) <= 1e-6, (engine, name)
            assert float(decided.float().mean()) > 0.95, (engine, name)
            worst["gradient, relative"] = max(
                worst["gradient, relative"], error / float(grad.norm())
            )
            worst["AdamW step where decided"] = max(
                worst["AdamW step where decided"], float(step[decided].abs().max())
            )
        print(f"{engine} float32: {worst}")  # pytest -rP shows the figures

        failures, figures = bfloat16_check(two[f"{engine}-bfloat16"], rounded, single)
        print(f"{engine} bfloat16: {figures}")
        assert failures == [], engine
    for mutation in MUTATIONS:
        failures, figures = bfloat16_check(two[mutation], rounded, single)
        print(f"ddp bfloat16, {mutation}: {figures}")
        assert failures and failures[0].startswith("all gradients"), (mutation, failures)
    assert not torch.equal(rounded["grads"][WORD_TABLE], single["grads"][WORD_TABLE])
