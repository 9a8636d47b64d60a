"""Drawing scenes with Pillow's ImageDraw, and a small deterministic PNG encoder.

An object of radius ``r`` (its size's fraction of the image side, in pixels) centred at
``(x, y) * side`` is drawn as: circle (radius r), square (half side 0.85 r), triangle
(equilateral, circumradius r, pointing up), diamond (half width 0.7 r, half height r), star
(5 points, radii r and 0.45 r), hexagon (circumradius r), cross (arms of half width 0.3 r). No
anti-aliasing, so pixels are a pure function of the scene.

``noise > 0`` adds Gaussian pixel noise of standard deviation ``noise * 255`` from a generator
seeded per image (:func:`render_scene`'s ``noise_seed``).

:func:`encode_png` is hand-written on purpose: Pillow's PNG writer spends about 200 us per 64x64
image on adaptive filtering and chunk handling, three times the rest of an image's budget at the
world's 1,000 samples/s target; a PNG of one IDAT (filter 0 on every row, zlib level 1) is 20
lines and decodes with any reader (the tests decode every image with Pillow). Its bytes depend
only on the pixels and zlib's version.

>>> from sugar.data.world.scene import Scene, SceneObject
>>> scene = Scene((SceneObject("star", "red", "large", 0.5, 0.5),))
>>> image = render_scene(scene, 32, small_size=0.1, large_size=0.16)
>>> image.size, image.getpixel((16, 16))
((32, 32), (220, 40, 40))
>>> encode_png(image)[:8]
b'\\x89PNG\\r\\n\\x1a\\n'
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

from sugar.data.world.scene import Scene
from sugar.data.world.vocab import BACKGROUND, PALETTE

__all__ = ["encode_png", "render_scene"]


def _polygon(cx: float, cy: float, radii: list[float], count: int, start: float) -> list:
    """``count`` vertices at equal angles from ``start`` (radians, 0 = up), cycling ``radii``."""
    return [
        (
            cx + radii[i % len(radii)] * math.sin(start + 2 * math.pi * i / count),
            cy - radii[i % len(radii)] * math.cos(start + 2 * math.pi * i / count),
        )
        for i in range(count)
    ]


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.85 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon(
            [(cx, cy - r), (cx + 0.866 * r, cy + 0.5 * r), (cx - 0.866 * r, cy + 0.5 * r)],
            fill=fill,
        )
    elif shape == "diamond":
        draw.polygon(
            [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill
        )
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r, 0.45 * r], 10, 0.0), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, [r], 6, math.pi / 6), fill=fill)
    elif shape == "cross":
        w = 0.3 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"shape={shape!r}: the renderer does not know it")


def render_scene(
    scene: Scene,
    image_size: int,
    small_size: float,
    large_size: float,
    noise: float = 0.0,
    noise_seed: int = 0,
) -> Image.Image:
    """The RGB image of ``scene``, ``image_size`` pixels square (objects in list order)."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    radius = {"small": small_size * image_size, "large": large_size * image_size}
    for o in scene.objects:
        _draw(draw, o.shape, o.x * image_size, o.y * image_size, radius[o.size], PALETTE[o.colour])
    if noise > 0:
        pixels = np.asarray(image, dtype=np.float32)
        jitter = np.random.default_rng(noise_seed).normal(0.0, noise * 255.0, pixels.shape)
        image = Image.fromarray(np.clip(pixels + jitter, 0, 255).round().astype(np.uint8), "RGB")
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an RGB image: 8-bit truecolour, one IDAT, filter 0, zlib level 1."""
    if image.mode != "RGB":
        raise ValueError(f"encode_png takes RGB images, got mode {image.mode!r}")
    width, height = image.size
    rows = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(height, width * 3)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 1))
        + _chunk(b"IEND", b"")
    )
