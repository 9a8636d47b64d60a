"""Image loading for real photos: EXIF orientation applied, the pixel limit and its message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from sugar.data.jsonl import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DataError,
    load_image,
    max_image_pixels,
    pixel_problem,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _sideways(path: Path, orientation: int | None) -> Path:
    """A 40 x 20 image stored red on the left, blue on the right, with an EXIF Orientation tag
    (``None``: no EXIF at all); PNG, so the pixels are exact."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20], array[:, 20:] = RED, BLUE
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_6_is_turned_upright(tmp_path: Path) -> None:
    _sideways(tmp_path / "photo.png", orientation=6)
    image = load_image(tmp_path, "photo.png")
    # Orientation 6: the stored picture is shown turned 90 degrees clockwise, so its left
    # (red) half is the top of the portrait the camera saw.
    assert image.size == (20, 40)
    assert image.getpixel((10, 0)) == RED
    assert image.getpixel((10, 39)) == BLUE


def test_exif_orientation_6_in_a_jpeg_is_turned_upright(tmp_path: Path) -> None:
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :32], array[:, 32:] = RED, BLUE
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(array).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    image = np.asarray(load_image(tmp_path, "photo.jpg"), dtype=int)
    assert image.shape == (64, 32, 3)  # (H, W, C): portrait
    assert np.abs(image[4, 16] - RED).max() < 16 and np.abs(image[60, 16] - BLUE).max() < 16


@pytest.mark.parametrize("orientation", [None, 1])
def test_an_image_without_an_exif_turn_loads_exactly_as_before(
    tmp_path: Path, orientation: int | None
) -> None:
    path = _sideways(tmp_path / "plain.png", orientation)
    with Image.open(path) as reference:  # the loading before EXIF orientation was applied
        expected = reference.convert("RGB").tobytes()
    image = load_image(tmp_path, "plain.png")
    assert image.size == (40, 20) and image.mode == "RGB"
    assert image.tobytes() == expected


def test_the_default_limit_passes_camera_photos_and_stops_bombs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SUGAR_MAX_IMAGE_PIXELS", raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 89_478_485
    for width, height in [(8688, 5792), (9504, 6336), (8192, 8192)]:  # 50, 60, 67 megapixels
        assert pixel_problem(Image.new("1", (width, height))) is None
    problem = pixel_problem(Image.new("1", (10_000, 10_000)))
    assert problem is not None
    assert problem.startswith("10000x10000 = 100,000,000 pixels is over the limit of 89,478,485")
    assert "set the environment variable SUGAR_MAX_IMAGE_PIXELS=100000000" in problem


def test_the_environment_variable_overrides_the_limit_and_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    monkeypatch.setenv("SUGAR_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(DataError, match="SUGAR_MAX_IMAGE_PIXELS=600 "):
        load_image(tmp_path, "a.png")
    monkeypatch.setenv("SUGAR_MAX_IMAGE_PIXELS", "600")
    assert load_image(tmp_path, "a.png").size == (30, 20)
