"""Edit requests: what an editor is asked to change, and the probes it is scored on.

An edit set is sample JSONL (:mod:`sugar.data.world.edits` documents the shape): each sample is
``[image?, question (context), new answer (target)]`` with ``meta`` holding the optional
``payload`` (the new fact as a sentence; default ``"<question> <answer>"``), ``rephrase``,
``image_rephrase``, ``locality_text`` and ``locality_image`` (``{"question", "image"}``).
:func:`read_edits` validates it and names file, line and field; :func:`from_mmedit` converts
MMEdit's E-VQA / E-IC records (``src``, ``rephrase``, ``image``, ``image_rephrase``, ``alt``,
``loc``, ``m_loc``, ``m_loc_q``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment

__all__ = ["PROBES", "EditRequest", "edit_from_sample", "from_mmedit", "read_edits"]

PROBES = ("reliability", "text_generality", "image_generality", "text_locality", "image_locality")
"""The five MMEdit metrics, in report order."""


@dataclass(frozen=True)
class EditRequest:
    """One edit: ``prompt`` (image? + question) should now be answered ``answer``."""

    id: str
    prompt: Sample
    """The question (and its image), without a target."""
    answer: str
    payload: str
    """The new fact as text (what an in-context editor shows)."""
    probes: dict[str, Sample] = field(default_factory=dict)
    """Probe name (``text_generality``, ``image_generality``, ``text_locality``,
    ``image_locality``) -> its prompt; absent probes are not scored."""

    @property
    def question(self) -> str:
        return next(g.text or "" for g in self.prompt.segments if g.kind == "text")

    @property
    def image(self) -> str | None:
        return next((g.image for g in self.prompt.segments if g.kind == "image"), None)

    def target(self, prompt: Sample | None = None, answer: str | None = None) -> Sample:
        """``prompt`` (default: the edit's) followed by ``answer`` (default: the new one)."""
        base = prompt or self.prompt
        text = self.answer if answer is None else answer
        return Sample(base.id, [*base.segments, Segment.text_(text, role="target")], "edit")

    def record(self) -> dict[str, Any]:
        """What a bundle's manifest lists about this edit."""
        return {"id": self.id, "question": self.question, "image": self.image,
                "answer": self.answer, "payload": self.payload}  # fmt: skip


def _question(probe: Any, where: str, field_name: str) -> Sample | None:
    """A probe ``{"question", "image"?}`` (or a plain question string) as a prompt sample."""
    if probe is None:
        return None
    if isinstance(probe, str):
        probe = {"question": probe}
    if not isinstance(probe, dict) or not isinstance(probe.get("question"), str):
        raise ValueError(f"{where}: meta.{field_name} must be {{'question', 'image'?}}")
    segments = [Segment.image_(probe["image"])] if probe.get("image") else []
    return Sample(f"{field_name}", [*segments, Segment.text_(probe["question"])], "edit")


def edit_from_sample(sample: Sample, where: str = "<memory>") -> EditRequest:
    """The edit a sample states (module docstring); ``ValueError`` naming ``where`` (file and
    line) and the field when it is not one."""
    targets = [g for g in sample.segments if g.role == "target"]
    if len(targets) != 1 or sample.segments[-1].role != "target" or targets[0].kind != "text":
        raise ValueError(f"{where}: an edit ends in exactly one target text (the new answer)")
    prompt = Sample(sample.id, list(sample.segments[:-1]), "edit")
    if not any(g.kind == "text" for g in prompt.segments):
        raise ValueError(f"{where}: an edit needs a question text before its answer")
    answer = str(targets[0].text)
    meta = sample.meta
    question = next(g.text for g in prompt.segments if g.kind == "text")
    payload = meta.get("payload") or f"{question} {answer}"
    if not isinstance(payload, str):
        raise ValueError(f"{where}: meta.payload must be a string, got {payload!r}")
    probes: dict[str, Sample] = {}
    image = next((g.image for g in prompt.segments if g.kind == "image"), None)
    rephrase = meta.get("rephrase")
    if rephrase is not None:
        if not isinstance(rephrase, str):
            raise ValueError(f"{where}: meta.rephrase must be a string")
        probes["text_generality"] = _question({"question": rephrase, "image": image}, where,
                                              "rephrase")  # type: ignore[assignment]  # fmt: skip
    if meta.get("image_rephrase") is not None:
        if image is None:
            raise ValueError(f"{where}: meta.image_rephrase given for an edit without an image")
        probes["image_generality"] = _question(
            {"question": question, "image": meta["image_rephrase"]}, where, "image_rephrase"
        )  # type: ignore[assignment]
    for name in ("locality_text", "locality_image"):
        probe = _question(meta.get(name), where, name)
        if probe is not None:
            probes["text_locality" if name == "locality_text" else "image_locality"] = probe
    return EditRequest(sample.id, prompt, answer, payload, probes)


def read_edits(path: str | Path, root: str | Path | None = None) -> list[EditRequest]:
    """The edits of a JSONL edit set (image paths relative to ``root``, default the file's
    folder); duplicate ids and malformed edits raise ``ValueError`` naming file and line."""
    path = Path(path)
    samples = read_samples(path, root if root is not None else path.parent)
    return [edit_from_sample(s, f"{path}:{line}") for line, s in enumerate(samples, start=1)]


def from_mmedit(records: Iterable[dict[str, Any]]) -> list[Sample]:
    """MMEdit's E-VQA / E-IC records as edit samples (ids ``mmedit-<n>``): ``src`` the
    question, ``alt`` the new answer, ``image`` / ``image_rephrase`` the images, ``rephrase``,
    ``loc`` (text locality question; MMEdit's ``"nq question: ..."`` prefix kept) and
    ``m_loc`` + ``m_loc_q`` (image locality)."""
    out: list[Sample] = []
    for n, record in enumerate(records):
        missing = [key for key in ("src", "alt") if key not in record]
        if missing:
            raise ValueError(f"MMEdit record {n}: missing {missing}")
        segments = [Segment.image_(record["image"])] if record.get("image") else []
        segments += [Segment.text_(record["src"]), Segment.text_(record["alt"], role="target")]
        meta: dict[str, Any] = {
            "rephrase": record.get("rephrase"),
            "image_rephrase": record.get("image_rephrase"),
            "locality_text": {"question": record["loc"]} if record.get("loc") else None,
            "locality_image": (
                {"question": record["m_loc_q"], "image": record["m_loc"]}
                if record.get("m_loc") and record.get("m_loc_q") else None
            ),
        }  # fmt: skip
        out.append(Sample(f"mmedit-{n}", segments, "edit", meta))
    return out
