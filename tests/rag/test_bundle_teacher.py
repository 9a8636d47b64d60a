"""The ``bundle`` teacher family: a trained bundle's own embeddings of each slice alone, through
the config's ``teacher.options``, and clear errors for what it cannot use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sugar
from sugar.config import ConfigError, load_config
from sugar.teachers import build_teacher, embed_samples
from sugar.teachers.lookup import teacher_lookup_from_config
from tests.rag.conftest import RagWorld


def test_bundle_teacher_embeds_each_slice_as_the_bundle_does(rag_world: RagWorld) -> None:
    teacher = build_teacher("bundle", path=str(rag_world.bundle), batch_size=2)
    model = sugar.load(rag_world.bundle)
    assert teacher.image_dim == teacher.text_dim == teacher.cross_dim == 16
    assert model.identity in teacher.identity
    texts = ["A red square.", "Where was object 7 made?", "A blue circle."]
    uni, cross = teacher.encode_texts(texts)
    assert uni.shape == (3, 16) and torch.equal(uni, cross)
    np.testing.assert_allclose(cross.numpy(), model.encode(texts), rtol=0, atol=1e-6)
    path = rag_world.captions[0].images[0]
    with Image.open(rag_world.root / path) as opened:
        pil = opened.convert("RGB")
    uni, cross = teacher.encode_images([pil])
    np.testing.assert_allclose(
        cross.numpy(), model.encode([{"image": path}], root=rag_world.root), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(cross.norm(dim=1).numpy(), [1.0], atol=1e-5)
    assert teacher.encode_texts([])[1].shape == (0, 16)


def test_bundle_teacher_from_the_config_gives_l_d_its_slice_vectors(
    rag_world: RagWorld, tmp_path: Path
) -> None:
    cfg = load_config(
        None,
        [
            "teacher.family=bundle",
            f"teacher.options={{path: {rag_world.bundle}}}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
            "structure.slice_text_by=sentence",
        ],
    )
    lookup = teacher_lookup_from_config(cfg)
    samples = rag_world.captions[:3]
    got = lookup(samples, rag_world.root)
    direct = embed_samples(build_teacher("bundle", path=str(rag_world.bundle)), samples,
                           rag_world.root)  # fmt: skip
    assert got.lengths.tolist() == direct.lengths.tolist()
    torch.testing.assert_close(got.cross, direct.cross, rtol=0, atol=1e-6)
    # each slice alone: a caption pair's image row is the bundle's vector of that image alone
    image_alone = sugar.load(rag_world.bundle).encode(
        [{"image": samples[0].images[0]}], root=rag_world.root, convert_to_tensor=True
    )
    first_image = int((~got.is_text[0]).nonzero()[0])
    torch.testing.assert_close(got.cross[0, first_image], image_alone[0], rtol=0, atol=1e-6)


def test_bundle_teacher_refuses_what_it_cannot_use(rag_world: RagWorld, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no trained retrieval projector"):
        build_teacher("bundle", path=str(rag_world.plain_bundle))
    with pytest.raises(FileNotFoundError, match=r"no model\.json"):
        build_teacher("bundle", path=str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['pth'\]; it takes"):
        build_teacher("bundle", pth=str(rag_world.bundle))
    with pytest.raises(ConfigError, match=r"teacher\.options\.path"):
        load_config(None, ["teacher.options={path: [1, 2]}"])
