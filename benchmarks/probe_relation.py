"""Does a model's image vector keep where objects are? (issue 22: why the same_relation intent
stays at instruction-as-text's level)

Linear probes (scikit-learn's ``LogisticRegressionCV``, 5-fold, installed with tslearn in the
``dev`` extra) on a bundle's retrieval vectors of the world's caption images (the image alone:
what a corpus of images is indexed with), fit on the train split's images and scored on the
val + test images; labels from the scenes' metadata. Each probe's held-out accuracy is printed
beside the majority class's:

- relation axis: for two-object images, is the pair side by side or one above the other (needs
  no object order);
- relation: for two-object images of two different shapes, where the alphabetically first shape
  sits relative to the other (left / right / above / below);
- object count; and, per shape and per colour, its presence (the mean over values).

    python benchmarks/probe_relation.py --model runs/demo/sugar/model --world runs/demo/world \
        [--cache runs/demo/cache/vision]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV

from sugar.control.train import slice_text_by_of
from sugar.data.schema import Sample
from sugar.data.world.scene import Scene, relation
from sugar.embed import embed_vectors
from sugar.models.bundle import load_bundle
from sugar.models.prefix import projector_from_extras


def _images(world: Path, split: str) -> tuple[list[dict[str, Any]], list[Sample]]:
    """The caption file's rows and, per row, its image alone as a sample."""
    lines = (world / "caption" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return rows, [Sample.from_dict({**r, "segments": r["segments"][:1]}) for r in rows]


def _labels(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per image: axis / relation (None where undefined), count, shapes, colours."""
    out: dict[str, list[Any]] = {k: [] for k in ("axis", "relation", "count", "shape", "colour")}
    for row in rows:
        objects = row["meta"]["scene"]["objects"]
        out["count"].append(len(objects))
        out["shape"].append({o["shape"] for o in objects})
        out["colour"].append({o["colour"] for o in objects})
        axis = where = None
        if len(objects) == 2:
            placed = Scene.from_dict(row["meta"]["scene"]).objects
            a, b = sorted(placed, key=lambda o: (o.shape, o.colour))
            found = relation(a, b)
            axis = None if found is None else found in ("left", "right")
            where = found if a.shape != b.shape else None
        out["axis"].append(axis)
        out["relation"].append(where)
    return out


def _probe(name: str, train: tuple[np.ndarray, list[Any]], held: tuple[np.ndarray, list[Any]]):
    """Fit on the train images with a label, score on the held-out ones; print and return
    (accuracy, majority-class accuracy)."""
    (xt, yt), (xh, yh) = train, held
    keep_t = [i for i, y in enumerate(yt) if y is not None]
    keep_h = [i for i, y in enumerate(yh) if y is not None]
    labels_t, labels_h = np.array([yt[i] for i in keep_t]), np.array([yh[i] for i in keep_h])
    model = LogisticRegressionCV(Cs=8, cv=5, max_iter=3000).fit(xt[keep_t], labels_t)
    accuracy = float((model.predict(xh[keep_h]) == labels_h).mean())
    values, counts = np.unique(labels_t, return_counts=True)
    majority = float((labels_h == values[counts.argmax()]).mean())
    print(f"{name}: held-out accuracy {accuracy:.3f} vs majority {majority:.3f} "
          f"(train {len(keep_t)}, held out {len(keep_h)})")  # fmt: skip
    return accuracy, majority


def _start() -> tuple[float, float]:
    """One torch thread, scikit-learn's FutureWarnings quiet; the wall and CPU clocks now."""
    torch.set_num_threads(1)
    # scikit-learn 1.9 announces default changes of LogisticRegressionCV that do not concern
    # this use (L2, accuracy); the probes' figures are the same either way
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    return time.perf_counter(), time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="A bundle with a retrieval projector.")
    parser.add_argument("--world", required=True, help="A built-in world (sugar data world).")
    parser.add_argument("--cache", default=None, help="The runs' frozen image-feature cache.")
    args = parser.parse_args()
    started, cpu = _start()
    world = Path(args.world)
    bundle = load_bundle(args.model, feature_cache=args.cache)
    model = bundle.model.eval()
    projector, pool = projector_from_extras(bundle.extras, bundle.extra_specs, args.model)
    slicing = slice_text_by_of(bundle.config)
    splits = {}
    for split in ("train", "val", "test"):
        rows, samples = _images(world, split)
        with torch.no_grad():
            vectors = embed_vectors(model, projector, samples, world, batch_size=64,
                                    image_pool=pool, slice_text_by=slicing)  # fmt: skip
        splits[split] = (vectors.numpy(), _labels(rows))
    xt, lt = splits["train"]
    xh = np.concatenate([splits["val"][0], splits["test"][0]])
    lh = {k: splits["val"][1][k] + splits["test"][1][k] for k in lt}
    _probe("relation axis (side by side or stacked), two objects",
           (xt, lt["axis"]), (xh, lh["axis"]))  # fmt: skip
    _probe("relation (4-way), two objects of two shapes",
           (xt, lt["relation"]), (xh, lh["relation"]))  # fmt: skip
    _probe("object count", (xt, lt["count"]), (xh, lh["count"]))
    for attribute in ("shape", "colour"):
        values = sorted(set().union(*lt[attribute]))
        scores = [
            _probe(f"has {attribute} {v}", (xt, [v in s for s in lt[attribute]]),
                   (xh, [v in s for s in lh[attribute]]))
            for v in values
        ]  # fmt: skip
        print(f"mean over {attribute}s: accuracy {np.mean([a for a, _ in scores]):.3f} "
              f"vs majority {np.mean([m for _, m in scores]):.3f}")  # fmt: skip
    print(f"{time.process_time() - cpu:.0f} CPU s, {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
