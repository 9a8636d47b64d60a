"""The knowledge base: facts no image shows, for retrieval-augmented QA (METHOD.md section 6).

Each fact has a *key* (what retrieval embeds), a *question* (what is asked) and a *payload*
(what the prompt shows). The key names the same thing as the question in other words, so finding
the fact is a retrieval problem, not a string match. Two kinds alternate:

- ``owner``: key = a pool image and ``Ownership record: the red square in this image.``;
  question = the image and ``Who owns the red square in this image?``; payload ``In exhibit
  481516, the red square in this image belongs to Mira.``, answer ``Mira``. Owner facts come in
  pairs on one image, about two different objects, so each has a distractor with the same image;
- ``origin``: key = ``Manufacturing record of object 271828.``; question = ``Where was object
  271828 made?``; payload ``Object 271828 was made in Oslo.``, answer ``Oslo``.

Keys and questions are drawn per fact from a few templates (:data:`OWNER_KEYS`,
:data:`OWNER_QUESTIONS`, :data:`ORIGIN_KEYS`, :data:`ORIGIN_QUESTIONS`), so no single string
rewrite maps a question to its key.

Files: ``kb_items/<split>.jsonl`` (the retrieval corpus: segments are the key, meta
``{"fact_id", "kind", "payload", "answer"}``) and ``kb/<split>.jsonl`` (the questions, meta
``{"fact_id", "kind", "answer"}``). In ``val`` and ``test`` a question is ``[image?, question
(context), answer (target)]``: the evaluation adds no, retrieved or oracle context itself. In
``train`` every question shows its fact first, ``[payload (context), image?, question (context),
answer (target)]``, laid out by :func:`sugar.data.prompt.with_references`, the function
``sugar.eval.tasks.kb_qa`` and :func:`sugar.rag.build_prompt` use, so a model learns to read a
supplied fact in exactly the layout it is tested and used with; its meta also
holds the key's segments (``retrieval_key``) and where the question starts (``query_from``), so
the retrieval micro-batch (:mod:`sugar.train.retrieval`) trains question -> key retrieval.

Facts are drawn fresh: answers uniformly from :data:`NAMES` / :data:`CITIES` (so without the
fact a model is at chance, 1/32, and with it can only answer by reading it), and every fact
carries a six-digit code drawn without replacement over the whole world, so no test payload
(nor its code) occurs in a training file.
"""

from __future__ import annotations

from typing import Any

from sugar.data.prompt import with_references
from sugar.data.schema import Sample, Segment
from sugar.data.world.context import SplitContext

__all__ = [
    "CITIES",
    "NAMES",
    "ORIGIN_KEYS",
    "ORIGIN_QUESTIONS",
    "OWNER_KEYS",
    "OWNER_QUESTIONS",
    "build_kb",
]

NAMES = (
    "Mira", "Tomas", "Ada", "Kofi", "Lena", "Ravi", "Sofia", "Omar",
    "Yuki", "Elena", "Jonas", "Priya", "Hugo", "Amara", "Felix", "Nadia",
    "Leo", "Iris", "Mateo", "Zara", "Ivan", "Chloe", "Kenji", "Maya",
    "Oskar", "Lucia", "Emil", "Hana", "Diego", "Freya", "Sami", "Noor",
)  # fmt: skip
CITIES = (
    "Lyon", "Oslo", "Porto", "Quito", "Kyoto", "Lima", "Dakar", "Perth",
    "Turin", "Hanoi", "Cairo", "Basel", "Accra", "Seoul", "Delhi", "Riga",
    "Malmo", "Bergen", "Cork", "Graz", "Ghent", "Nantes", "Tartu", "Sucre",
    "Cusco", "Split", "Bonn", "Leeds", "Izmir", "Pune", "Fez", "Kobe",
)  # fmt: skip


OWNER_QUESTIONS = (
    "Who owns the {object} in this image?",
    "Who is the owner of the {object} in this image?",
)
OWNER_KEYS = (
    "Ownership record: the {object} in this image.",
    "Owner register entry for the {object} in this image.",
    "Title deed for the {object} in this image.",
)
ORIGIN_QUESTIONS = ("Where was object {code} made?", "In which city was object {code} made?")
ORIGIN_KEYS = (
    "Manufacturing record of object {code}.",
    "Production log entry: object {code}.",
    "Factory register, object {code}.",
)


def build_kb(ctx: SplitContext, count: int, codes: list[int]) -> tuple[list[Sample], list[Sample]]:
    """``count`` facts as (QA samples, items); ``codes`` are this split's fresh codes.

    Even ``i``: owner facts, two per pool image (objects ``2c`` and ``2c + 1`` of the scene, mod
    its object count, on the image's ``c``-th visit); odd ``i``: origin facts.
    """
    if len(codes) < count:
        raise ValueError(f"build_kb: {count} facts need {count} codes, got {len(codes)}")
    rng = ctx.rng("kb")
    wording = ctx.rng("kb-wording")  # its own stream: answers stay as they were drawn before
    pool = ctx.pool
    questions, items = [], []
    for i in range(count):
        fact_id = f"kb-{ctx.split}-{i:06d}"
        code = codes[i]
        if i % 2 == 0:
            j = i // 2
            visit, index = divmod(j // 2, len(pool.scenes))
            scene = pool.scenes[index]
            o = scene.objects[(2 * visit + j % 2) % len(scene.objects)]  # >= 2 objects: distinct
            answer, kind = rng.choice(NAMES), "owner"
            name = f"{o.colour} {o.shape}"
            image = [Segment.image_(pool.images[index])]
            question = [*image, Segment.text_(wording.choice(OWNER_QUESTIONS).format(object=name))]
            key = [*image, Segment.text_(wording.choice(OWNER_KEYS).format(object=name))]
            payload = f"In exhibit {code}, the {name} in this image belongs to {answer}."
        else:
            answer, kind = rng.choice(CITIES), "origin"
            question = [Segment.text_(wording.choice(ORIGIN_QUESTIONS).format(code=code))]
            key = [Segment.text_(wording.choice(ORIGIN_KEYS).format(code=code))]
            payload = f"Object {code} was made in {answer}."
        items.append(
            Sample(
                f"kb_item-{ctx.split}-{i:06d}",
                key,
                "kb_item",
                {"fact_id": fact_id, "kind": kind, "payload": payload, "answer": answer},
            )
        )
        meta: dict[str, Any] = {"fact_id": fact_id, "kind": kind, "answer": answer}
        if ctx.split == "train":  # the retrieval micro-batch pairs the question with its key
            meta["retrieval_key"] = [segment.to_dict() for segment in key]
            meta["query_from"] = 1  # the question starts after the shown fact
        qa = Sample(fact_id, [*question, Segment.text_(answer, role="target")], "kb", meta)
        questions.append(with_references(qa, payload) if ctx.split == "train" else qa)
    return questions, items
