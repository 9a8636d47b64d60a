"""The built-in procedural world: coloured shapes, captions, probes, stories and facts.

Scenes of 2-6 objects (shape, colour, size, position) are rendered with Pillow to small RGB
images; every caption, hard negative, question and answer is derived from the scene metadata by
functions tests can call (:func:`describe`, :func:`caption_fits`, :func:`answer_question`).
:func:`generate_world` writes all task families for train/val/test in one atomic directory;
:func:`plan_counts` says how many samples it will write. Modules:

- ``vocab``: names, popularity, companions, held-out combinations;
- ``scene``: objects, relations, the sampler;   ``render``: pixels and PNG bytes;
- ``language``: caption claims, text, parser;   ``questions``: question forms and answers;
- ``captions``: captions, hard negatives, Winoground pairs;   ``probes``: VQA and POPE;
- ``story``: five-scene stories;   ``needle``: needle probes;   ``kb``: the knowledge base;
- ``instructed``: the caption images as queries with an instruction per intent (issue 22);
- ``generate``: the on-disk layout, :func:`plan_counts`, :func:`generate_world`.
"""

from sugar.data.world.captions import NEGATIVE_KINDS, WINOGROUND_SWAPS
from sugar.data.world.generate import TASKS, generate_world, plan_counts, world_options
from sugar.data.world.language import caption_fits, describe, parse_caption
from sugar.data.world.probes import POPE_SETTINGS, QUESTION_TYPES
from sugar.data.world.questions import answer_question
from sugar.data.world.render import encode_png, render_scene
from sugar.data.world.scene import Scene, SceneObject, relation
from sugar.data.world.story import story_key
from sugar.data.world.vocab import SPLITS

__all__ = [
    "NEGATIVE_KINDS",
    "POPE_SETTINGS",
    "QUESTION_TYPES",
    "SPLITS",
    "TASKS",
    "WINOGROUND_SWAPS",
    "Scene",
    "SceneObject",
    "answer_question",
    "caption_fits",
    "describe",
    "encode_png",
    "generate_world",
    "parse_caption",
    "plan_counts",
    "relation",
    "render_scene",
    "story_key",
    "world_options",
]
