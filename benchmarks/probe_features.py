"""What can a reader learn from the frozen image features, and from how many questions? (issue
17: why VQA stays at 45-46 % at every training length)

The built-in MLLMs see an image as frozen EfficientNet-Lite0 features (``model.image_size``
pixels, pooled to a ``model.grid`` x ``model.grid`` grid). These probes ask what a linear reader
of those features can answer about the world's caption images, fit on the train split and
scored on val + test, with labels from the scenes' metadata:

- colour of a shape: for each shape present exactly once in an image, its colour, from the
  features crossed with the shape (one block of weights per shape, one multinomial logistic
  regression), at growing numbers of training examples: the built-in world's VQA file holds
  ``train_per_task / 4`` colour questions per probe round, so the curve says what more distinct
  questions could buy. The floor printed beside it guesses a colour present in the image;
- relation (4-way), for two-object images of two shapes: where the alphabetically first shape
  sits relative to the other.

Each probe is a scikit-learn logistic regression on standardised features; its C is chosen by
4-fold cross-validation (``LogisticRegressionCV``) on all the training examples, then kept for
the curve's smaller samples (each the mean of three draws). Grids above 1 are reduced to 256
principal components fit on the training images.

    python benchmarks/probe_features.py --world runs/demo/world [--sizes 128,224] \
        [--grids 1,2,4] [--curve 100,200,400] [--cache runs/demo/cache/vision]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

# benchmarks/probe_relation.py (scripts run from their folder): the caption rows, their labels
# and the probes' start-up
from probe_relation import _images, _labels, _start
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from sugar.models.tiny import FrozenGridVision

Item = tuple[int, str, str]  # (image index, shape, colour)


def _features(world: Path, rows: list[dict[str, Any]], vision: FrozenGridVision) -> NDArray[Any]:
    """(N, grid * grid * 1280) frozen features of the rows' images, 64 images at a time."""
    paths = [str(world / r["segments"][0]["image"]) for r in rows]
    return torch.cat(
        [vision(paths[i : i + 64]).flatten(1) for i in range(0, len(paths), 64)]
    ).numpy()


def _colour_items(rows: list[dict[str, Any]]) -> list[Item]:
    items = []
    for index, row in enumerate(rows):
        objects = row["meta"]["scene"]["objects"]
        for shape in sorted({o["shape"] for o in objects}):
            same = [o for o in objects if o["shape"] == shape]
            if len(same) == 1:
                items.append((index, shape, same[0]["colour"]))
    return items


def _relation_items(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(image index, relation) where ``probe_relation`` defines one (two objects, two shapes)."""
    return [(i, where) for i, where in enumerate(_labels(rows)["relation"]) if where is not None]


def _crossed(x: NDArray[Any], items: list[Item], shapes: list[str]) -> NDArray[Any]:
    """Each item's image features in its shape's block, zeros elsewhere."""
    width = x.shape[1]
    out = np.zeros((len(items), width * len(shapes)), dtype=np.float32)
    for row, (index, shape, _) in enumerate(items):
        block = shapes.index(shape)
        out[row, block * width : (block + 1) * width] = x[index]
    return out


def _best_c(x: NDArray[Any], y: list[str]) -> float:
    """C by 4-fold cross-validation on the training examples."""
    return float(LogisticRegressionCV(Cs=6, cv=4, max_iter=3000).fit(x, y).C_[0])


def _accuracy(
    xt: NDArray[Any], yt: list[str], xh: NDArray[Any], yh: list[str], c: float | None = None
) -> float:
    c = _best_c(xt, yt) if c is None else c
    model = LogisticRegression(C=c, max_iter=3000).fit(xt, yt)
    return float((model.predict(xh) == np.array(yh)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", required=True, help="A built-in world (sugar data world).")
    parser.add_argument("--sizes", default="128", help="Input sizes in pixels, comma-separated.")
    parser.add_argument("--grids", default="1", help="Grid sides, comma-separated.")
    parser.add_argument("--curve", default="100,200,400", help="Training-example counts.")
    parser.add_argument("--cache", default=None, help="The runs' frozen image-feature cache.")
    args = parser.parse_args()
    started, cpu = _start()
    world = Path(args.world)
    train = _images(world, "train")[0]
    held = _images(world, "val")[0] + _images(world, "test")[0]
    colour_t, colour_h = _colour_items(train), _colour_items(held)
    relation_t, relation_h = _relation_items(train), _relation_items(held)
    shapes = sorted({shape for _, shape, _ in colour_t})
    present = [
        len({o["colour"] for o in held[i]["meta"]["scene"]["objects"]}) for i, _, _ in colour_h
    ]
    print(
        f"colour of a shape: {len(colour_t)} training examples, {len(colour_h)} held out; "
        f"guessing a colour present in the image scores {np.mean([1 / n for n in present]):.3f}"
    )
    print(f"relation: {len(relation_t)} training examples, {len(relation_h)} held out")
    rng = np.random.default_rng(0)
    for size in (int(s) for s in args.sizes.split(",")):
        for grid in (int(g) for g in args.grids.split(",")):
            vision = FrozenGridVision(size, grid, args.cache)
            xt, xh = _features(world, train, vision), _features(world, held, vision)
            scaler = StandardScaler().fit(xt)
            xt, xh = scaler.transform(xt), scaler.transform(xh)
            if grid > 1:
                pca = PCA(256, random_state=0).fit(xt)
                xt, xh = pca.transform(xt), pca.transform(xh)
            yh = [c for _, _, c in colour_h]
            held_x = _crossed(xh, colour_h, shapes)
            best = _best_c(_crossed(xt, colour_t, shapes), [c for *_, c in colour_t])
            curve = []
            for n in [int(c) for c in args.curve.split(",")] + [len(colour_t)]:
                draws = 1 if n >= len(colour_t) else 3
                scores = []
                for _ in range(draws):
                    pick = rng.choice(len(colour_t), min(n, len(colour_t)), replace=False)
                    sub = [colour_t[k] for k in sorted(pick)]
                    scores.append(_accuracy(_crossed(xt, sub, shapes), [c for *_, c in sub],
                                            held_x, yh, best))  # fmt: skip
                curve.append(f"{min(n, len(colour_t))}: {np.mean(scores):.3f}")
            rt, rh = [i for i, _ in relation_t], [i for i, _ in relation_h]
            where = _accuracy(
                xt[rt], [r for _, r in relation_t], xh[rh], [r for _, r in relation_h]
            )
            print(f"{size} px, grid {grid}: colour of a shape by training examples "
                  f"({', '.join(curve)}); relation {where:.3f}", flush=True)  # fmt: skip
    print(f"{time.process_time() - cpu:.0f} CPU s, {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
