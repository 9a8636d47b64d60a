"""Result thumbnails show a photo upright, as the model reads it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import ExifTags, Image

from sugar.serve.messages import thumbnail


def test_a_photo_with_exif_orientation_6_is_thumbnailed_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored landscape, shown portrait
    Image.new("RGB", (200, 100), "red").save(tmp_path / "p.jpg", exif=exif.tobytes())
    url = thumbnail(tmp_path / "p.jpg")
    assert url is not None and url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as shown:
        assert shown.size == (48, 96)
    assert thumbnail(tmp_path / "missing.jpg") is None
