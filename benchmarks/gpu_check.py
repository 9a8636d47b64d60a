"""Device check: the training loop on a CUDA device, against the same run on the CPU.

Run on a machine with a GPU (``python benchmarks/gpu_check.py``; ``--device cpu`` runs every
step on the CPU only, to try the script). It prints, and writes to ``--out`` as JSON:

1. the tiny MLLM (ViT vision, so no EfficientNet weights are needed) trained with the Sugar
   objective (a hash-based stand-in teacher from the tests) for ``--steps`` steps on the CPU and
   on the device from the same seed: the largest loss difference over the trajectory, the
   median step time on each, and every evaluation task run with the model on each;
2. for each Hugging Face family (tiny random checkpoints built as in the tests): one forward's
   logits on the device in float32 against the CPU, then a short Sugar training run on the
   device with bf16 autocast, gradient checkpointing and SDPA attention, and ``embed_vectors``
   on its bundle: losses finite, vectors unit-norm.

Nothing here is a test: CI has no GPU. The figures go into the issue notes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/

from tests.models.hf_checkpoints import (
    llava_checkpoint,
    qwen2vl_checkpoint,
    write_images,
)
from tests.train.fake_teacher import FakeTeacher

from sugar.config import load_config
from sugar.data.jsonl import write_samples
from sugar.data.schema import Sample, Segment
from sugar.data.world import generate_world
from sugar.embed import embed_vectors
from sugar.eval.tasks import TASKS, load_eval_model, run_tasks
from sugar.models.base import backbone_class
from sugar.models.bundle import load_bundle
from sugar.models.prefix import projector_from_extras
from sugar.train.loop import train


def _step_times(history: list[dict]) -> list[float]:
    times = [h["time"] for h in history if "loss" in h]
    return [b - a for a, b in itertools.pairwise(times)]


def tiny_runs(work: Path, device: str, steps: int) -> dict:
    world = work / "world"
    generate_world(world, seed=0, train_per_task=64, val_per_task=16, test_per_task=4)
    out: dict = {}
    for where in dict.fromkeys(("cpu", device)):  # once when device is the cpu
        cfg = load_config(
            None,
            [
                f"data.root={world}", f"run.output_dir={work / f'tiny-{where}'}",
                f"run.device={where}", "model.vision=vit", "model.feature_cache=null",
                "model.vocab_size=400", f"train.steps={steps}", "train.batch_size=32",
                "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=0",
                "data.val=[caption/val.jsonl]",
                "data.train=[caption/train.jsonl, story/train.jsonl]",
            ],
        )  # fmt: skip
        result = train(cfg, teacher=FakeTeacher(), progress=False)
        losses = [h["loss"] for h in result.history if "loss" in h]
        model = load_eval_model(result.bundle)
        model.backbone.to(where)
        if model.projector is not None:
            model.projector.to(where)
        tasks = run_tasks(model, world, list(TASKS), limit=4)
        out[where] = {
            "losses": losses,
            "median_step_s": statistics.median(_step_times(result.history)),
            "tasks_run": sorted(tasks),
        }
    pairs = zip(out["cpu"]["losses"], out[device]["losses"], strict=True)
    out["max_loss_difference"] = max(abs(a - b) for a, b in pairs)
    return out


def hf_runs(work: Path, device: str) -> dict:
    root = work / "hf"
    write_images(root / "data")
    llava_checkpoint(root / "hf-llava")
    llava_checkpoint(root / "hf-llava-next", next_=True)
    qwen2vl_checkpoint(root / "hf-qwen2-vl")
    texts = ["a red circle .", "two blue squares . a cat !", "a green star left of a dog .",
             "the yellow cat ."]  # fmt: skip
    names = ["wide.png", "tall.png", "big.png", "square.png"]
    pairs = [
        Sample(f"c{i}", [Segment.image_(f"img/{n}"), Segment.text_(t, role="target")])
        for i, (n, t) in enumerate(zip(names, texts, strict=True))
    ]
    write_samples(root / "data" / "train.jsonl", pairs)
    write_samples(root / "data" / "val.jsonl", pairs)
    out: dict = {}
    for family in ("hf-llava", "hf-llava-next", "hf-qwen2-vl"):
        model = backbone_class(family).create(str(root / family), lora_rank=4)
        batch = model.collate(pairs, root / "data")
        with torch.no_grad():
            cpu_logits = model(batch).logits
            device_logits = model.to(device)(batch).logits.cpu()
        cfg = load_config(
            None,
            [
                f"data.root={root / 'data'}", f"run.output_dir={work / family}",
                f"run.device={device}", f"model.family={family}",
                f"model.pretrained={root / family}", "model.lora.rank=4",
                "model.autocast=bfloat16", "model.gradient_checkpointing=true",
                "model.attn_implementation=sdpa", "train.steps=3", "train.batch_size=4",
                "train.log_every=1", "train.eval_every=3", "train.eval_samples=4",
                "train.select_metric=val_t2i_r1", "data.train=[train.jsonl]",
                "data.val=[val.jsonl]",
            ],
        )  # fmt: skip
        result = train(cfg, teacher=FakeTeacher(), progress=False)
        bundle = load_bundle(result.bundle)
        projector, _ = projector_from_extras(bundle.extras, bundle.extra_specs, family)
        assert projector is not None
        vectors = embed_vectors(bundle.model.to(device), projector.to(device), pairs,
                                root / "data", batch_size=2)  # fmt: skip
        out[family] = {
            "fp32_logits_max_abs_difference": float((cpu_logits - device_logits).abs().max()),
            "bf16_losses": [h["loss"] for h in result.history if "loss" in h],
            "val": [h for h in result.history if "val_lm_loss" in h],
            "vector_norms": vectors.norm(dim=-1).tolist(),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "device": torch.cuda.get_device_name() if args.device != "cpu" else "cpu",
            "torch": torch.__version__,
            "tiny": tiny_runs(Path(tmp), args.device, args.steps),
            "hf": hf_runs(Path(tmp), args.device),
        }
    report["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
