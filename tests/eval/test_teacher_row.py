"""The teacher alone as an evaluation row: a sample's vector is the normalised mean of its
slices' cross-modal vectors; it neither scores nor generates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from sugar.data.schema import Sample, Segment
from sugar.teachers.sensitivity import TeacherEvalModel


class ColourTeacher:
    """Cross vector of an image: its mean RGB; of a text: its length, vowels and spaces."""

    identity = "colour-teacher"
    image_dim = text_dim = cross_dim = 3

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        rows = torch.stack([torch.tensor(im.resize((1, 1)).getpixel((0, 0))) for im in images])
        vectors = F.normalize(rows.float() + 1.0, dim=-1)
        return vectors, vectors

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        rows = torch.tensor(
            [[len(t), sum(c in "aeiou" for c in t), t.count(" ") + 1] for t in texts]
        )
        vectors = F.normalize(rows.float(), dim=-1)
        return vectors, vectors


def test_sample_vectors_are_normalised_means_of_slice_vectors(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    teacher = ColourTeacher()
    model = TeacherEvalModel(teacher)
    one_image = Sample("i", [Segment.image_("red.png")])
    one_text = Sample("t", [Segment.text_("a red square")])
    story = Sample("s", [Segment.image_("red.png"), Segment.text_("a red square. It is big.")])
    vectors = model.embed([one_image, one_text, story], tmp_path)

    image = teacher.encode_images([Image.open(tmp_path / "red.png").convert("RGB")])[1][0]
    texts = teacher.encode_texts(["a red square", "a red square.", "It is big."])[1]
    assert torch.allclose(vectors[0], image)
    assert torch.allclose(vectors[1], texts[0])
    # the story's three slices (image, two sentences), averaged, then normalised
    assert torch.allclose(vectors[2], F.normalize(image + texts[1] + texts[2], dim=0))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(3))
    assert model.score([story], tmp_path) is None
    assert model.generate([story], tmp_path) is None
    assert model.generates is False
