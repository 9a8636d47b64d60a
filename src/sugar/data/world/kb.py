"""The knowledge base: facts no image shows, for retrieval-augmented QA (METHOD.md section 6).

Each fact has a *key* (what retrieval embeds) and a *payload* (what the prompt shows). Two kinds
alternate:

- ``owner`` (image + question key): a pool image and ``Who owns the red square in this
  image?``; payload ``In exhibit 481516, the red square in this image belongs to Mira.``, answer
  ``Mira``;
- ``origin`` (question key): ``Where was object 271828 made?``; payload
  ``Object 271828 was made in Oslo.``, answer ``Oslo``.

Files: ``kb_items/<split>.jsonl`` (the retrieval corpus: segments are the key, meta
``{"fact_id", "kind", "payload", "answer"}``) and ``kb/<split>.jsonl`` (the questions:
``[image?, question (context), answer (target)]``, meta ``{"fact_id", "kind", "answer"}``).

Facts are drawn fresh: answers uniformly from :data:`NAMES` / :data:`CITIES` (so without
retrieval a model is at chance, 1/32), and every fact carries a six-digit code drawn without
replacement over the whole world, so no test payload (nor its code) occurs in a training file.
"""

from __future__ import annotations

from sugar.data.schema import Sample, Segment
from sugar.data.world.context import SplitContext

__all__ = ["CITIES", "NAMES", "build_kb"]

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


def build_kb(ctx: SplitContext, count: int, codes: list[int]) -> tuple[list[Sample], list[Sample]]:
    """``count`` facts as (QA samples, items); ``codes`` are this split's fresh codes."""
    if len(codes) < count:
        raise ValueError(f"build_kb: {count} facts need {count} codes, got {len(codes)}")
    rng = ctx.rng("kb")
    pool = ctx.pool
    questions, items = [], []
    for i in range(count):
        fact_id = f"kb-{ctx.split}-{i:06d}"
        code = codes[i]
        if i % 2 == 0:
            j = i // 2
            index = j % len(pool.scenes)
            scene = pool.scenes[index]
            o = scene.objects[(j // len(pool.scenes)) % len(scene.objects)]
            answer, kind = rng.choice(NAMES), "owner"
            question = f"Who owns the {o.colour} {o.shape} in this image?"
            payload = (
                f"In exhibit {code}, the {o.colour} {o.shape} in this image belongs to {answer}."
            )
            key = [Segment.image_(pool.images[index]), Segment.text_(question)]
        else:
            answer, kind = rng.choice(CITIES), "origin"
            question = f"Where was object {code} made?"
            payload = f"Object {code} was made in {answer}."
            key = [Segment.text_(question)]
        items.append(
            Sample(
                f"kb_item-{ctx.split}-{i:06d}",
                key,
                "kb_item",
                {"fact_id": fact_id, "kind": kind, "payload": payload, "answer": answer},
            )
        )
        meta = {"fact_id": fact_id, "kind": kind, "answer": answer}
        qa = [*key, Segment.text_(answer, role="target")]
        questions.append(Sample(fact_id, qa, "kb", meta))
    return questions, items
