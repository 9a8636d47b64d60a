"""Teacher benchmark: slice-embedding throughput, head training time, held-out R@1/R@5 and the
sensitivity table (pairwise accuracy per hard-negative kind).

    python benchmarks/bench_teachers.py [--train 1000] [--test 500] [--out /tmp/bench_teachers]

Builds a world (train/test captions), measures the frozen encoders (EfficientNet-Lite0 at 64 and
128 px, MiniLM) and the trained teacher end to end at 1 and 2 torch threads, trains the head
with the defaults and reports retrieval and sensitivity on the test captions. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sugar.data.jsonl import load_image, read_samples
from sugar.data.world import generate_world
from sugar.teachers import ImageFeatures, OfflineTeacher, TextFeatures, embed_slices
from sugar.teachers.sensitivity import retrieval_recall, sensitivity_report
from sugar.teachers.training import train_teacher


def _rate(run: object, items: list, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(items)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_teachers"))
    args = parser.parse_args()
    world = args.out / "world"
    if not (world / "manifest.json").is_file():
        generate_world(
            world,
            seed=3,
            train_per_task=args.train,
            val_per_task=12,
            test_per_task=args.test,
            image_size=64,
        )
    test = read_samples(world / "caption" / "test.jsonl", world, check_images=False)
    images = [load_image(world, s.images[0]) for s in test[:256]]
    texts = [" ".join(x.text for x in s.segments if x.text) for s in test[:256]]

    print("== throughput (items/s; batches of 64; best of 2)")
    text_features = TextFeatures()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for size in (64, 128):
            feats = ImageFeatures(image_size=size)
            print(
                f"threads={threads} efficientnet-lite0 {size:>3} px: "
                f"{_rate(feats, images):7.1f} images/s"
            )
        print(
            f"threads={threads} minilm mean-pooled:     {_rate(text_features, texts):7.1f} "
            "sentences/s"
        )

    torch.set_num_threads(1)
    head_dir = args.out / "head"
    summary = train_teacher(
        data=world / "caption" / "train.jsonl",
        root=world,
        out_dir=head_dir,
        feature_cache_dir=args.out / "cache",
    )
    print(
        f"== head training (1 thread): {summary['pairs']} pairs, frozen features "
        f"{summary['feature_seconds']} s (cache: 0 s on a rerun), {summary['steps']} steps "
        f"{summary['train_seconds']} s, final loss {summary['final_loss']:.3f}"
    )
    teacher = OfflineTeacher.from_dir(head_dir)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(
            f"threads={threads} offline teacher end to end: "
            f"{_rate(lambda xs: embed_slices(teacher, xs), images):7.1f} images/s, "
            f"{_rate(lambda xs: embed_slices(teacher, xs), texts):7.1f} sentences/s"
        )
    torch.set_num_threads(1)
    recall = retrieval_recall(teacher, test, world)
    print(
        f"== held-out image->text among {int(recall['candidates'])} test captions: "
        f"R@1 {recall['R@1']:.3f}  R@5 {recall['R@5']:.3f}"
    )
    report = sensitivity_report(teacher, test, world)
    print("== sensitivity (test captions)")
    print(f"{'kind':<16}{'cross_acc':>10}{'text_uni_cos':>14}{'cross_txt_cos':>15}{'n':>6}")
    for kind, row in report.items():
        print(
            f"{kind:<16}{row['cross_accuracy']:>10.3f}{row['text_uni_cosine']:>14.4f}"
            f"{row['cross_text_cosine']:>15.4f}{int(row['count']):>6}"
        )
    (args.out / "bench.json").write_text(json.dumps({"retrieval": recall, "kinds": report}))


if __name__ == "__main__":
    main()
