"""Relations, sentences, questions, rendering and PNG bytes, on cases worked out by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sugar.data.world import (
    Scene,
    SceneObject,
    answer_question,
    caption_fits,
    describe,
    encode_png,
    parse_caption,
    relation,
    render_scene,
)
from sugar.data.world.language import caption_text
from sugar.data.world.vocab import BACKGROUND, PALETTE, SHAPES
from tests.world.helpers import naive_fits

RED_SQUARE = SceneObject("square", "red", "small", 0.2, 0.5)
BLUE_CIRCLE = SceneObject("circle", "blue", "large", 0.7, 0.4)
GREEN_SQUARE = SceneObject("square", "green", "large", 0.45, 0.85)


def test_relation_is_the_dominant_axis() -> None:
    assert relation(RED_SQUARE, BLUE_CIRCLE) == "left"
    assert relation(BLUE_CIRCLE, RED_SQUARE) == "right"
    assert relation(GREEN_SQUARE, RED_SQUARE) == "below"
    assert relation(RED_SQUARE, GREEN_SQUARE) == "above"
    diagonal = SceneObject("star", "red", "small", 0.75, 0.75)  # exact binary fractions
    assert relation(diagonal, SceneObject("star", "blue", "small", 0.25, 0.25)) is None


def test_describe_by_hand() -> None:
    scene = Scene((RED_SQUARE, BLUE_CIRCLE, GREEN_SQUARE))
    assert describe(scene) == (
        "A small red square is to the left of a large blue circle. "
        "A large green square is below the large blue circle. There are two squares."
    )
    assert describe(Scene((RED_SQUARE, BLUE_CIRCLE))) == (
        "A small red square is to the left of a large blue circle."
    )


@pytest.mark.parametrize(
    ("caption", "true"),
    [
        ("A small red square is to the left of a large blue circle.", True),
        ("A red square is above a green square.", True),
        ("A large green square is below the blue circle.", True),
        ("A large square is below a circle.", True),
        ("A small blue square is to the left of a large red circle.", False),
        ("A small red square is to the right of a large blue circle.", False),
        ("There are three objects.", True),
        ("There are two squares.", True),
        ("There are three squares.", False),
        ("There is one circle.", True),
        ("There is an orange circle.", False),
        ("A large yellow star appears above the blue circle.", False),
        ("The red square moves above the green square.", True),
        ("The purple circle turns blue.", True),
        ("The blue circle turns pink.", False),
    ],
)
def test_caption_truth_matches_the_naive_reading(caption: str, true: bool) -> None:
    scene = Scene((RED_SQUARE, BLUE_CIRCLE, GREEN_SQUARE))
    assert caption_fits(caption, scene) is true
    assert naive_fits(caption, scene.to_dict()) is true
    assert caption_text(parse_caption(caption)) == caption


def test_parse_rejects_text_outside_the_grammar() -> None:
    with pytest.raises(ValueError, match=r"cannot parse sentence 'A dog is here\.'"):
        parse_caption("There are two squares. A dog is here.")


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("What colour is the circle?", "blue"),
        ("What colour is the large square?", "green"),
        ("What shape is the red object?", "square"),
        ("How many squares are there?", "two"),
        ("How many blue objects are there?", "one"),
        ("How many objects are there?", "three"),
        ("Where is the red square relative to the blue circle?", "left"),
        ("Is there a green square in the image?", "yes"),
        ("Is there an orange star in the image?", "no"),
        ("Is the green square below the red square?", "yes"),
        ("Is the green square above the red square?", "no"),
        ("Is the green square above the pink star?", None),
    ],
)
def test_answers_by_hand(question: str, answer: str | None) -> None:
    assert answer_question(Scene((RED_SQUARE, BLUE_CIRCLE, GREEN_SQUARE)), question) == answer


def test_ambiguous_or_unknown_questions_raise() -> None:
    scene = Scene((RED_SQUARE, BLUE_CIRCLE, GREEN_SQUARE))
    with pytest.raises(ValueError, match="ambiguous"):
        answer_question(scene, "What colour is the square?")
    with pytest.raises(ValueError, match="outside the world's grammar"):
        answer_question(scene, "Why is the sky blue?")


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_fills_its_centre_and_leaves_the_corners(shape: str) -> None:
    scene = Scene((SceneObject(shape, "yellow", "large", 0.5, 0.5),))
    image = render_scene(scene, 64, small_size=0.1, large_size=0.16)
    assert image.getpixel((32, 32)) == PALETTE["yellow"]
    assert image.getpixel((0, 0)) == image.getpixel((63, 63)) == BACKGROUND
    pixels = np.asarray(image)
    filled = np.all(pixels == PALETTE["yellow"], axis=-1)
    assert 30 < filled.sum() < (2 * 0.16 * 64) ** 2 + 1  # inside the object's bounding box


def test_sizes_differ_in_area() -> None:
    areas = []
    for size in ("small", "large"):
        image = render_scene(Scene((SceneObject("circle", "red", size, 0.5, 0.5),)), 64, 0.1, 0.16)
        areas.append(int(np.all(np.asarray(image) == PALETTE["red"], axis=-1).sum()))
    assert areas[1] > 2 * areas[0]


def test_encode_png_matches_pillows_encoder() -> None:
    scene = Scene((RED_SQUARE, BLUE_CIRCLE, GREEN_SQUARE))
    image = render_scene(scene, 40, 0.1, 0.16, noise=0.1, noise_seed=3)
    reference = io.BytesIO()
    image.save(reference, format="PNG")  # the naive reference: Pillow's own writer
    ours = Image.open(io.BytesIO(encode_png(image)))
    theirs = Image.open(io.BytesIO(reference.getvalue()))
    assert ours.mode == theirs.mode == "RGB" and ours.size == theirs.size == (40, 40)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert encode_png(image) == encode_png(image.copy())
    with pytest.raises(ValueError, match="RGB"):
        encode_png(image.convert("L"))


def test_noise_is_seeded() -> None:
    scene = Scene((RED_SQUARE,))
    clean = np.asarray(render_scene(scene, 32, 0.1, 0.16))
    a, b, c = (np.asarray(render_scene(scene, 32, 0.1, 0.16, 0.05, s)) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, clean)
