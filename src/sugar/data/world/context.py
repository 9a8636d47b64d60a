"""What every task builder of one split shares: vocabulary, sampler, image writer, scene pool.

Randomness: each (task, split) draws from its own ``random.Random`` seeded by the string
``"sugar-world/{seed}/{task}/{split}"`` (string seeds go through SHA-512, so streams are stable
across processes and Python runs), and no generation step iterates over a ``set``; the world is
therefore a pure function of its options and seed.

The *pool* of a split is its caption scenes and images: VQA, POPE, needle probes and the
knowledge base ask about those images rather than drawing new ones (as VQA and POPE do on COCO),
which keeps the world at about one image per sample.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from sugar.data.world.render import encode_png, render_scene
from sugar.data.world.scene import Scene, SceneSampler
from sugar.data.world.vocab import Combo, Vocabulary

__all__ = ["ImageWriter", "Pool", "SplitContext"]


class ImageWriter:
    """Renders scenes to PNG files under ``root``; paths it returns are relative to ``root``.

    It writes plain files: ``root`` is the temporary directory of
    :func:`sugar.io.atomic_directory`, which fsyncs them all and swaps the whole world in at
    once, so a per-file atomic write (an fsync and a rename each, 1.6 ms) would add nothing but
    ten times the time.
    """

    def __init__(
        self, root: Path, image_size: int, small_size: float, large_size: float, noise: float
    ) -> None:
        self.root = root
        self.image_size = image_size
        self.small_size, self.large_size = small_size, large_size
        self.noise = noise
        self.count = 0
        self._made: set[str] = set()

    def write(self, rel: str, scene: Scene, rng: random.Random) -> str:
        """Render ``scene`` to ``root/rel`` (a ``.png`` path); returns ``rel``."""
        seed = rng.getrandbits(63) if self.noise > 0 else 0
        image = render_scene(
            scene, self.image_size, self.small_size, self.large_size, self.noise, seed
        )
        folder, _, _ = rel.rpartition("/")
        if folder not in self._made:  # a set of str: only membership, never iterated
            (self.root / folder).mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        with open(os.path.join(self.root, rel), "wb") as handle:
            handle.write(encode_png(image))
        self.count += 1
        return rel


@dataclass
class Pool:
    """A split's caption scenes, their images and captions, indexed by combination."""

    scenes: list[Scene] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    by_combo: dict[Combo, list[int]] = field(default_factory=dict)

    def add(self, scene: Scene, image: str, caption: str) -> None:
        for combo in scene.combos:
            self.by_combo.setdefault(combo, []).append(len(self.scenes))
        self.scenes.append(scene)
        self.images.append(image)
        self.captions.append(caption)


@dataclass
class SplitContext:
    """Everything a task builder needs for one split."""

    split: str
    seed: int
    vocab: Vocabulary
    sampler: SceneSampler
    images: ImageWriter
    min_objects: int
    max_objects: int
    pool: Pool = field(default_factory=Pool)

    def rng(self, task: str) -> random.Random:
        """The random stream of ``task`` in this split."""
        return random.Random(f"sugar-world/{self.seed}/{task}/{self.split}")

    def image_path(self, task: str, name: str) -> str:
        """``images/<task>/<split>/<name>.png``."""
        return f"images/{task}/{self.split}/{name}.png"
