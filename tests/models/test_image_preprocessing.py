"""Vision preprocessing of real photos: centre crop, not squash; EXIF orientation; cache keys.

The invariant the built-in world relies on: a square image without an EXIF turn gets the very
pixels, features and cache keys it got before (the reference below is that code, kept here).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from sugar.data.jsonl import load_image
from sugar.models.feature_cache import FeatureCache, content_key
from sugar.models.pretrained import (
    PREPROCESSING,
    EfficientNetGrid,
    image_file_key,
    images_to_pixels,
    open_image,
)
from sugar.teachers.base import slice_key
from tests.models.conftest import TinyWorld

RED, BLUE = (255, 0, 0), (0, 0, 255)


def reference_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """``images_to_pixels`` before the centre crop: RGB, a plain bicubic resize to size x size.
    # (N, 3, size, size)"""
    arrays = []
    for image in images:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.float32))
    return (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) - 127.0) / 128.0


def reference_slice_key(image: Image.Image) -> str:
    """``slice_key`` of an image before :data:`PREPROCESSING` existed."""
    rgb = image.convert("RGB")
    return content_key(b"image\0" + f"{rgb.size[0]}x{rgb.size[1]}\0".encode() + rgb.tobytes())


def _decoded(path: str) -> Image.Image:
    """The image at ``path`` as stored, decoded, with its file closed."""
    with Image.open(path) as image:
        image.load()
        return image


def _world_images(world: TinyWorld, count: int = 12) -> list[str]:
    paths = sorted({p for s in world.captions + world.stories for p in s.images})
    return [str(world.root / p) for p in paths[:count]]


def _png_bytes(image: Image.Image, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def encoder() -> EfficientNetGrid:
    return EfficientNetGrid(grid=2)


@pytest.mark.parametrize("size", [64, 128])  # the world's side; model.image_size of the configs
def test_square_world_images_give_byte_identical_pixels_and_features(
    tiny_world: TinyWorld, encoder: EfficientNetGrid, size: int
) -> None:
    paths = _world_images(tiny_world)
    with Image.open(paths[0]) as first:
        assert first.size[0] == first.size[1] and not first.getexif()  # square, no EXIF
    before = reference_pixels([_decoded(p) for p in paths], size)
    after = images_to_pixels([open_image(p) for p in paths], size)
    assert after.dtype == before.dtype and torch.equal(after, before)
    assert torch.equal(encoder(after), encoder(before))


def test_a_wide_image_is_centre_cropped_not_squashed() -> None:
    array = np.zeros((128, 256, 3), np.uint8)  # 2:1; left and right quarters red
    array[:, :64], array[:, 64:192], array[:, 192:] = RED, BLUE, RED
    wide = Image.fromarray(array)
    pixels = images_to_pixels([wide], 64)[0]  # (3, 64, 64)
    red = pixels[0] * 128 + 127
    assert pixels.shape == (3, 64, 64)
    # Only the bicubic kernel's reach into the cropped-away quarters is left: under 8 % red at
    # the two outer columns, none inside. Squashed, 16 columns on each side would be red.
    assert float(red.max()) < 0.08 * 255
    assert float(red[:, 2:-2].abs().max()) == 0.0
    squashed = reference_pixels([wide], 64)[0, 0] * 128 + 127
    assert float(squashed[:, :8].min()) == 255.0
    # The crop is the centred square, resized: the same as cropping it first, inside.
    middle = images_to_pixels([wide.crop((64, 0, 192, 128))], 64)[0]
    assert torch.equal(pixels[:, :, 2:-2], middle[:, :, 2:-2])


def test_a_tall_image_keeps_its_centred_square() -> None:
    array = np.zeros((120, 60, 3), np.uint8)  # 1:2; top and bottom quarters red
    array[:30], array[30:90], array[90:] = RED, BLUE, RED
    pixels = images_to_pixels([Image.fromarray(array)], 32)[0]
    assert float((pixels[0] * 128 + 127)[2:-2].abs().max()) == 0.0
    assert float((pixels[2] * 128 + 127).min()) > 0.9 * 255  # blue throughout


def test_an_exif_orientation_6_photo_is_turned_before_use(tmp_path: Path) -> None:
    array = np.zeros((32, 32, 3), np.uint8)  # stored: red left half, blue right half
    array[:, :16], array[:, 16:] = RED, BLUE
    (tmp_path / "photo.png").write_bytes(_png_bytes(Image.fromarray(array), orientation=6))
    upright = np.zeros_like(array)  # shown turned clockwise: red top half, blue bottom half
    upright[:16], upright[16:] = RED, BLUE
    expected = images_to_pixels([Image.fromarray(upright)], 32)
    assert torch.equal(images_to_pixels([open_image(str(tmp_path / "photo.png"))], 32), expected)
    assert torch.equal(images_to_pixels([load_image(tmp_path, "photo.png")], 32), expected)


def test_file_keys_change_only_where_preprocessing_changed(tmp_path: Path) -> None:
    square = _png_bytes(Image.new("RGB", (16, 16), BLUE))
    assert image_file_key(square) == content_key(square)  # the world's keys: unchanged
    assert image_file_key(_png_bytes(Image.new("RGB", (16, 16)), orientation=1)) == content_key(
        _png_bytes(Image.new("RGB", (16, 16)), orientation=1)
    )
    for data in (
        _png_bytes(Image.new("RGB", (32, 16))),  # cropped now
        _png_bytes(Image.new("RGB", (16, 16)), orientation=6),  # turned now
    ):
        assert image_file_key(data) == f"{content_key(data)}:{PREPROCESSING}"
    assert image_file_key(b"not an image") == content_key(b"not an image")
    # Such keys round-trip through the persistent cache.
    key = image_file_key(_png_bytes(Image.new("RGB", (32, 16))))
    cache = FeatureCache(tmp_path, "encoder")
    cache.put({key: torch.ones(2)})
    cache.flush()
    assert torch.equal(FeatureCache(tmp_path, "encoder").get([key])[key], torch.ones(2))


def test_teacher_slice_keys_change_only_where_preprocessing_changed(tmp_path: Path) -> None:
    square = Image.new("RGB", (16, 16), BLUE)
    assert slice_key(square) == reference_slice_key(square)
    wide = Image.new("RGB", (32, 16), BLUE)
    assert slice_key(wide) != reference_slice_key(wide)
    assert slice_key(wide) == slice_key(wide.copy())  # still a content key
    # A turned photo is keyed by its upright pixels: not the sideways ones cached before.
    array = np.zeros((16, 16, 3), np.uint8)
    array[:, :8] = RED
    stored = Image.fromarray(array)
    (tmp_path / "photo.png").write_bytes(_png_bytes(stored, orientation=6))
    assert slice_key(load_image(tmp_path, "photo.png")) != reference_slice_key(stored)


def test_the_students_frozen_vision_keys_and_pixels(tmp_path: Path, tiny_world: TinyWorld) -> None:
    """FrozenGridVision (the built-in MLLMs' vision) caches under :func:`image_file_key` (a
    wide photo cached before the crop is not served) and reduces each photo on its own, with
    the pixels of one call over the batch."""
    from sugar.models.tiny import FrozenGridVision, _pixels

    wide, square = tmp_path / "wide.png", tmp_path / "square.png"
    wide.write_bytes(_png_bytes(Image.new("RGB", (32, 16), RED)))
    square.write_bytes(_png_bytes(Image.new("RGB", (16, 16), BLUE)))
    vision = FrozenGridVision(image_size=32, grid=1, cache_dir=None)
    assert vision._key(str(square)) == content_key(square.read_bytes())
    assert vision._key(str(wide)) == f"{content_key(wide.read_bytes())}:{PREPROCESSING}"
    paths = [str(wide), str(square), *_world_images(tiny_world, 4)]
    expected = images_to_pixels([open_image(p) for p in paths], 32)
    assert torch.equal(_pixels(paths, 32), expected)
