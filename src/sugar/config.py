"""The typed configuration tree: defaults in code, YAML and ``key=value`` overrides merged strictly.

A run's configuration is a tree of dataclasses rooted at :class:`SugarConfig`. It is built once::

    cfg = load_config("configs/x.yaml", ["structure.alpha=0.5", "run.seed=3"])
    cfg = load_config(["configs/x.yaml", "configs/smoke.yaml"])  # an overlay: x at toy size

and then never read by library modules: builders turn sections into keyword arguments. Rules:

- an unknown key (in YAML or an override) is a :class:`ConfigError` naming the key and the
  nearest valid one;
- a value of the wrong type is an error naming the dotted field and the value; ``bool`` is never
  accepted for a number nor a number for ``bool``; an ``int`` is accepted for a ``float``; a
  string that spells a number is accepted for a ``float`` (PyYAML reads ``1e-4`` as a string);
- each section validates its own ranges in ``__post_init__``; errors carry the dotted path;
- :func:`to_dict` -> YAML -> :func:`load_config` reproduces the resolved config exactly.

The strict construction is :mod:`sugar.strict` (hand-written, about 130 lines, rather than
OmegaConf or dacite: neither suggests the nearest valid key, OmegaConf has no ``Literal``
fields, and both report paths differently for nested overrides). The world section's rules are
:mod:`sugar.data.world.rules`; the L_d and loss-weight defaults are
:class:`~sugar.losses.structure.StructureOptions` and :class:`~sugar.losses.LossWeights`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from sugar.align.gak import Normalisation
from sugar.config_files import load_tree
from sugar.losses.generative import LmReduction
from sugar.losses.structure import (
    ImagePool,
    PredictedKernel,
    Reduction,
    SameSampleTarget,
    SigmaMode,
    SliceTextBy,
    StructureOptions,
    TkStandardise,
)
from sugar.losses.weights import LossWeights
from sugar.model_config import LoraConfig, ModelConfig
from sugar.strict import (
    ConfigError,
    build_dataclass,
    parse_override,
)
from sugar.strict import (
    check as _check,
)

__all__ = [
    "ConfigError",
    "ContrastiveConfig",
    "DataConfig",
    "LoraConfig",
    "ModelConfig",
    "RunConfig",
    "StructureConfig",
    "SugarConfig",
    "TeacherConfig",
    "TrainConfig",
    "WorldConfig",
    "config_from_dict",
    "load_config",
    "parse_override",
    "save_config",
    "to_dict",
    "to_yaml",
]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# The tree. Sections land with the issues that use them; each field documents its meaning.
# --------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Where a run writes and how it is made reproducible."""

    seed: int = 0
    """Seed for every random generator of the run (data order, prefix sampling, init)."""
    output_dir: str = "runs/default"
    """Run directory: resolved config, manifest, checkpoints, logs."""
    torch_threads: int = 0
    """``torch.set_num_threads`` for the run; 0 leaves torch's default."""
    device: str = "cpu"
    """Where training runs: ``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (cuda when available)."""

    def __post_init__(self) -> None:
        _check(self.torch_threads >= 0, "torch_threads", self.torch_threads, "must be >= 0")
        _check(
            self.device in ("cpu", "cuda", "auto") or bool(re.fullmatch(r"cuda:\d+", self.device)),
            "device", self.device, "must be cpu, cuda, cuda:N or auto",
        )  # fmt: skip
        _check(bool(self.output_dir), "output_dir", self.output_dir, "must not be empty")


_OPTIONS = StructureOptions()  # the one set of L_d defaults
_WEIGHTS = LossWeights()  # the one set of loss-weight defaults


@dataclass
class StructureConfig:
    """The structure-induced loss L_d and its target (METHOD.md sections 1-5).

    Defaults were chosen by measurement on validation data (``sugar targets inspect`` and
    200-step validation runs from the shared base; README "Choosing the defaults"), where the
    runs could tell options apart; where they could not, the paper's reading stays.
    """

    alpha: float = _WEIGHTS.alpha
    """Weight of L_d in L = L_g + alpha * L_d (alpha 3 did not beat 1 on validation R@1)."""
    slice_text_by: SliceTextBy = _OPTIONS.slice_text_by
    """How text is cut into slices: one per sentence or one per segment."""
    prefixes_per_sample: int = _OPTIONS.prefixes_per_sample
    """Prefixes drawn per sample (the final slice plus random earlier slice ends)."""
    image_pool: ImagePool = _OPTIONS.image_pool
    """Image slice representation: mean of its tokens' hidden states, or the last token."""
    projector_dim: int = _OPTIONS.projector_dim
    """Output width of the retrieval projector (2-layer MLP, GELU)."""
    sigma_mode: SigmaMode = _OPTIONS.sigma_mode
    """``fixed``: sigma = delta; ``pair_length``: the paper's delta * sqrt((n + m) / 2)."""
    delta: float | Literal["auto"] = "auto"
    """GAK bandwidth; ``auto`` = median of sqrt(phi) over sampled training slice pairs."""
    delta_pairs: int = 1000
    """Number of random slice pairs behind ``delta = auto`` (at least 1,000)."""
    gak_normalisation: Normalisation = _OPTIONS.gak_normalisation
    """How the log-GAK becomes a target in (0, 1] (``none`` is diagnostic only). Chosen by
    ``sugar targets inspect``: with ``cosine`` the (n, m) length pair explained 78 % of the
    target variance and 64 % of targets lay below the local kernel's floor; here 1 % and 4 %."""
    target_slope: float = _OPTIONS.target_slope
    """Slope s of ``length_pair_standardised``'s logistic, target = sigmoid(s * z) for the
    z-scored log-GAK (other normalisations have no logistic and ignore it). Smaller s packs the
    other-sample targets closer to 0.5, so the same-sample targets (1) stand further above
    them. Chosen on validation (the demo's recipe, 225 steps; README): t2i / story 5c+4i / KB
    fact R@1 33.5 / 21.0 / 55.0 % at s = 1, 50.5 / 29.5 / 76.0 at 0.25 (0.5: 48.0 / 24.5 /
    58.0; 0.1: 33.0 / 23.0 / 88.0); alpha 0.25 at s = 1 changed nothing (33.5 / 20.5 / 53.5)."""
    tk_standardise: TkStandardise = _OPTIONS.tk_standardise
    """Divide each distance type (image-image, text-text, image-text) by its training median."""
    triple_kernel: bool = _OPTIONS.triple_kernel
    """``true``: the paper's Triple Kernel, uni-modal teacher vectors for same-modality pairs;
    ``false`` (the default, "w/o TK" in the paper): the cross-modal vectors for every pair.
    Chosen on validation with the offline teachers: all-MiniLM-L6-v2 sees two captions of one
    world as near-identical, so the Triple Kernel's caption-caption targets contradict the
    image-caption ones (val t2i R@1 7.0 % with it, 20.0 % without, 60 steps; README)."""
    use_gak: bool = _OPTIONS.use_gak
    """``false`` is the "w/o GAK" ablation: mean local kernel over all slice pairs."""
    predicted_kernel: PredictedKernel = _OPTIONS.predicted_kernel
    """How the predicted matrix Mr is built from projected embeddings."""
    same_sample_target: SameSampleTarget = _OPTIONS.same_sample_target
    """``one`` (the paper): prefixes of one sample (or of views of one source) have target 1;
    ``kernel`` tied it on validation R@1 with a worse generative loss."""
    structure_reduction: Reduction = _OPTIONS.structure_reduction
    """``paper``: (1/n) * sum of squared errors; ``mean``: the same divided by n once more."""

    def __post_init__(self) -> None:
        _check(self.alpha >= 0, "alpha", self.alpha, "must be >= 0")
        _check(self.prefixes_per_sample >= 1, "prefixes_per_sample", self.prefixes_per_sample)
        _check(self.projector_dim >= 1, "projector_dim", self.projector_dim, "must be >= 1")
        if self.delta != "auto":
            _check(self.delta > 0, "delta", self.delta, "must be > 0 or 'auto'")
        _check(self.delta_pairs >= 1000, "delta_pairs", self.delta_pairs, "must be >= 1000")
        _check(
            math.isfinite(self.target_slope) and self.target_slope > 0,
            "target_slope", self.target_slope, "must be a finite number > 0",
        )  # fmt: skip

    def options(self) -> StructureOptions:
        """The section's L_d switches as the loss takes them (the one mapping)."""
        return StructureOptions(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(StructureOptions)}
        )


_WORLD_COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")


@dataclass
class WorldConfig:
    """The built-in procedural world (``sugar.data.world``): scene statistics, difficulty, sizes.

    Built with ``generate_world(out_dir, seed=cfg.run.seed, **to_dict(cfg.world))``; the world's
    manifest records every field. Colour and shape names are checked against the renderer's
    palette when the world is built.
    """

    image_size: int = 64
    """Side of the square RGB images, in pixels."""
    min_objects: int = 2
    """Fewest objects in a caption scene (>= 2: every caption states a relation)."""
    max_objects: int = 4
    """Most objects in a scene (3-6; stories grow up to it, needle decoys need 3)."""
    colours: list[str] = field(default_factory=lambda: list(_WORLD_COLOURS))
    """Colour names; more than ``max_objects``, so every scene leaves a colour out."""
    shapes: list[str] = field(
        default_factory=lambda: ["circle", "square", "triangle", "diamond", "star", "hexagon"]
    )
    """Shape names (circle, square, triangle, diamond, star, hexagon, cross); at least 3."""
    relations: list[str] = field(default_factory=lambda: ["left", "right", "above", "below"])
    """Spatial relations scenes use; closed under inverse (left/right, above/below)."""
    small_size: float = 0.1
    """Radius of a small object, as a fraction of the image side."""
    large_size: float = 0.16
    """Radius of a large object, as a fraction of the image side (> ``small_size``)."""
    relation_margin: float = 0.05
    """Least ``||dx| - |dy||`` (fraction of the side) of placed pairs, so relations are visible."""
    noise: float = 0.0
    """Standard deviation of Gaussian pixel noise, as a fraction of 255 (0: clean images)."""
    popularity: float = 1.0
    """Zipf exponent of colour+shape frequencies (0: uniform); gives POPE "popular" its sense."""
    cooccurrence: float = 0.5
    """Chance that a scene's next object is a companion of a placed one (POPE "adversarial")."""
    heldout_fraction: float = 0.1
    """Fraction of colour+shape combinations that never occur in training (at least one if > 0)."""
    heldout_scene_fraction: float = 0.25
    """Share of val/test caption scenes forced to hold a held-out combination."""
    pope_top_k: int = 3
    """POPE popular/adversarial negatives are drawn among the top-k absent combinations."""
    story_group_size: int = 3
    """Stories sharing one final caption (>= 3, so caption 5 alone fits >= 3 pool images)."""
    needle_pairs: int = 6
    """Image-caption pairs per needle probe, exactly one of them useful."""
    train_per_task: int = 5000
    """Samples per task file in ``train`` (stories round up to whole groups)."""
    train_probes_per_image: int = 1
    """Training VQA questions and POPE probe pairs per caption image: the ``train`` VQA and POPE
    files hold this many times ``train_per_task`` samples over the same images (more questions,
    no more images to render or encode). Validation and test files are unchanged."""
    train_vqa_per_image: int | None = None
    """Training VQA questions per caption image when they should differ from the POPE probe
    pairs (``train_probes_per_image`` then sets POPE alone); ``None``: the same number. The VQA
    file is the one ``train_probes_per_image`` of this value writes; every other file is
    unchanged."""
    val_per_task: int = 500
    """Samples per task file in ``val``."""
    test_per_task: int = 2000
    """Samples per task file in ``test`` (>= 2,000 for the evaluation protocol)."""
    instruction_synthesiser: str = "template"
    """Who words the instructed task's instructions (``sugar.data.world.instructed``):
    ``template`` (built in, deterministic) or ``hf`` (a local Hugging Face model at
    ``instruction_model`` paraphrases each intent's seed instructions; too few valid
    paraphrases are topped up from the templates; the manifest records every wording)."""
    instruction_model: str = ""
    """Local directory of the Hugging Face model ``instruction_synthesiser: hf`` uses (never
    downloaded); must be empty for ``template``."""
    instruction_paraphrases: int = 32
    """Wordings per intent the ``hf`` synthesiser keeps (4-32; templates top up the rest)."""

    def __post_init__(self) -> None:
        from sugar.data.world.rules import world_rules  # lazy: the world imports this module

        for ok, name, value, why in world_rules(self):
            _check(ok, name, value, why)


@dataclass
class DataConfig:
    """Training and validation data: JSONL files of samples under one dataset root."""

    root: str = "runs/world"
    """Dataset root: JSONL paths and image paths are relative to it."""
    train: list[str] = field(
        default_factory=lambda: ["caption/train.jsonl", "story/train.jsonl", "vqa/train.jsonl"]
    )
    """Training JSONL files (relative to ``root``), mixed and shuffled together."""
    val: list[str] = field(default_factory=lambda: ["caption/val.jsonl"])
    """Validation JSONL files: validation losses and metrics, default choices (never test)."""
    view_weights: dict[str, float] = field(
        default_factory=lambda: {
            "as_is": 0.4,
            "caption_first": 0.15,
            "image_only": 0.1,
            "caption_only": 0.1,
            "split": 0.25,
        }
    )
    """How image-caption pairs enter a batch (METHOD.md section 1; sugar.data.views)."""
    upsample: dict[str, int] = field(default_factory=dict)
    """Training file -> how many times its samples appear per epoch (default 1): a data
    mixture, e.g. ``{caption/train.jsonl: 4}``. Keys must be files of ``train``."""
    retrieval: list[str] = field(default_factory=list)
    """Files of the retrieval micro-batch (``train.retrieval_batch``; sugar.train.retrieval):
    every sample must make a query/document pair. Empty: the samples of ``train`` that do."""

    def __post_init__(self) -> None:
        _check(bool(self.train), "train", self.train, "needs at least one file")
        _check(
            set(self.upsample) <= set(self.train)
            and all(isinstance(n, int) and n >= 1 for n in self.upsample.values()),
            "upsample", self.upsample, f"keys among train files {self.train}, integers >= 1",
        )  # fmt: skip
        known = {"as_is", "caption_first", "image_only", "caption_only", "split"}
        _check(
            set(self.view_weights) <= known and sum(self.view_weights.values()) > 0,
            "view_weights",
            self.view_weights,
            f"keys among {sorted(known)}, values >= 0 with a positive sum",
        )


@dataclass
class TrainConfig:
    """The training loop (sugar.train.loop): optimiser, schedule, batches, logging, checkpoints."""

    steps: int = 1000
    """Optimiser steps."""
    batch_size: int = 16
    """Samples per micro-batch (L_d's n = batch_size * prefixes_per_sample)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (L_d is computed per micro-batch)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases, norms and embeddings)."""
    warmup_ratio: float = 0.03
    """Linear warm-up share of ``steps``; cosine decay to 0 after it."""
    clip_norm: float = 1.0
    """Gradient-norm clipping (0: off)."""
    log_every: int = 10
    """Steps between log lines (JSONL, TensorBoard when installed)."""
    eval_every: int = 200
    """Steps between validation runs (0: only at the end)."""
    eval_samples: int = 256
    """Validation samples per evaluation (the first ones of the validation files)."""
    checkpoint_every: int = 200
    """Steps between checkpoints (0: only at the end)."""
    select_metric: str = "val_loss"
    """Validation metric that picks the best checkpoint (lower is better for ``*loss``): one of
    :func:`sugar.eval.validation.evaluate`'s (``val_<loss part>``, ``val_grounding_*``,
    ``val_t2i_r1``, ``val_answer_accuracy``)."""
    init_from: str | None = None
    """A bundle to start from (the shared generative base); its tokenizer is kept."""
    lm_weight: float = _WEIGHTS.lm
    """Weight of L_g (0: no generative loss, the contrastive-only baseline)."""
    lm_reduction: LmReduction = "token"
    """L_g's mean: over supervised tokens (``token``, as LLaVA) or over samples (``sample``:
    each sample's mean NLL, so a one-token answer weighs as much as a long caption)."""
    retrieval_batch: int = 0
    """Image-caption pairs per step in a retrieval micro-batch beside the generative one
    (sugar.train.retrieval): L_d and InfoNCE train on it, L_g on the generative batch, whose
    image-caption pairs then enter as they are (no views). 0: one mixed batch with views."""
    retrieval_interleaved: int = 0
    """Other query/document pairs per step in the retrieval micro-batch (stories -> their
    next image, questions -> their knowledge key), when the retrieval files hold any."""
    embedding_chunk: int = 0
    """GradCache (Gao et al., 2021; sugar.train.grad_cache): embed the retrieval micro-batch in
    chunks of at most this many samples without a graph, compute L_d and InfoNCE on the cached
    vectors, then re-run each chunk with its vectors' gradients. The same gradients as one pass,
    with memory growing with the chunk instead of the batch, for one more forward pass. 0: off
    (one pass with graph). Needs a retrieval micro-batch."""
    parallel: Literal["ddp", "fsdp2"] = "ddp"
    """The data-parallel engine under torchrun (sugar.train.distributed): ``ddp``
    (DistributedDataParallel, every rank holds the whole model) or ``fsdp2`` (``fully_shard``
    on each decoder block and on the model with the objective, sugar.train.fsdp: parameters,
    gradients and AdamW moments sharded over the ranks). Same losses and gradients; checkpoints
    are the same files, so a run resumes under either. No effect in one process."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_samples"):
            _check(getattr(self, name) >= 1, name, getattr(self, name))
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        _check(self.clip_norm >= 0, "clip_norm", self.clip_norm, "must be >= 0")
        _check(self.lm_weight >= 0, "lm_weight", self.lm_weight, "must be >= 0")
        for name in ("eval_every", "checkpoint_every", "retrieval_batch", "retrieval_interleaved"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        _check(self.embedding_chunk >= 0, "embedding_chunk", self.embedding_chunk, "must be >= 0")
        _check(self.parallel in ("ddp", "fsdp2"), "parallel", self.parallel, "must be ddp or fsdp2")
        _check(
            not self.embedding_chunk or self.retrieval_batch + self.retrieval_interleaved > 0,
            "embedding_chunk", self.embedding_chunk,
            "needs a retrieval micro-batch (train.retrieval_batch or train.retrieval_interleaved)",
        )  # fmt: skip


@dataclass
class TeacherConfig:
    """The frozen teachers behind the Triple Kernel (METHOD.md section 4) and the offline
    teacher's cross-modal head (``sugar train-teacher``;
    :func:`sugar.teachers.training.train_teacher`)."""

    family: str = "offline"
    """Registered teacher family (``offline``, ``hf``, ``bundle``; see ``sugar.teachers``)."""
    options: dict[str, str | int | float | bool] = field(default_factory=dict)
    """Keyword options of the family's builder: ``hf`` takes ``cross``, ``image``, ``text``
    (names or local directories), ``text_pooling``, ``device``, ``offline``; ``bundle`` takes
    ``path`` (a trained run's ``model`` directory) and ``batch_size``; ``offline`` reads
    ``head_dir`` and ``cache_dir`` below. On the command line as a YAML mapping:
    ``'teacher.options={path: runs/cafe/model}'``."""
    head_dir: str = "runs/teacher"
    """Directory of the trained cross-modal head (``offline`` family)."""
    cache_dir: str = "cache/teachers"
    """Persistent cache of frozen features and teacher vectors (keyed by content and identity)."""
    image_size: int = 128
    """Side in pixels images are resized to before EfficientNet-Lite0 (64 px: R@5 -20 points)."""
    grid: int = 1
    """EfficientNet feature grid G: the image vector is G*G cells of 1280 (1: pooled 1280-d)."""
    head_dim: int = 256
    """Width of the cross-modal head's shared space."""
    dropout: float = 0.7
    """Input dropout of the head's projections during training (measured best of 0.5-0.7)."""
    steps: int = 300
    """Optimizer steps of head training."""
    batch_size: int = 256
    """Pairs per head-training step (the InfoNCE batch)."""
    learning_rate: float = 1e-3
    """AdamW learning rate of head training."""
    weight_decay: float = 0.1
    """AdamW weight decay of head training."""

    def __post_init__(self) -> None:
        _check(bool(self.family), "family", self.family, "must not be empty")
        _check(self.image_size >= 32, "image_size", self.image_size, "must be >= 32")
        for name in ("grid", "head_dim", "steps", "batch_size"):
            _check(getattr(self, name) >= 1, name, getattr(self, name))
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")


@dataclass
class ContrastiveConfig:
    """The CLIP-style InfoNCE of the baselines (METHOD.md section 7): CAFe-style = L_g + L_c,
    contrastive-only = L_c alone (``train.lm_weight: 0``). Off (weight 0) for Sugar."""

    weight: float = _WEIGHTS.contrastive
    """Weight of L_c over the batch's ``split`` image-caption pairs (0: off)."""
    hard_negatives: int = 0
    """Per pair, this many ``meta.negatives`` captions as extra image->text candidates
    (the world's stated kinds or ``sugar mine`` output; one extra forward; single process)."""

    def __post_init__(self) -> None:
        _check(self.weight >= 0, "weight", self.weight, "must be >= 0")
        _check(self.hard_negatives >= 0, "hard_negatives", self.hard_negatives, "must be >= 0")


@dataclass
class SugarConfig:
    """The root of the tree: one section per concern."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def loss_weights(self) -> LossWeights:
        """``train.lm_weight``, ``structure.alpha``, ``contrastive.weight`` as the objective
        takes them."""
        return LossWeights(self.train.lm_weight, self.structure.alpha, self.contrastive.weight)


# --------------------------------------------------------------------------------------------
# Strict construction from plain data
# --------------------------------------------------------------------------------------------


def config_from_dict(data: dict[str, Any], cls: type[T] = SugarConfig) -> T:  # type: ignore[assignment]
    """Build and validate a config of type ``cls`` from plain data (strict, see module doc)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(data).__name__}")
    return build_dataclass(cls, data, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (the inverse of :func:`config_from_dict`)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """The config as YAML text, keys in declaration order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------


def load_config(
    path: str | Path | Sequence[str | Path] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> SugarConfig:
    """Defaults, then the YAML file at ``path`` (if any; a list: each file merged over the one
    before, e.g. ``[configs/sugar.yaml, configs/smoke.yaml]``, :mod:`sugar.config_files`), then
    ``key=value`` overrides; validated.

    Raises :class:`ConfigError` (naming the file, key or value) or ``FileNotFoundError``.
    """
    return load_tree(SugarConfig, path, overrides)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (see :mod:`sugar.io`)."""
    from sugar.io import atomic_write_text

    return atomic_write_text(path, to_yaml(cfg))
