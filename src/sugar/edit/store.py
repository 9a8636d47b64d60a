"""Edited bundles: the edits travel with the model, listed in its manifest, removable by id.

An edited bundle is an ordinary bundle (:mod:`sugar.models.bundle`, written atomically) with the
extra module ``edits``: its spec, which ``model.json`` lists, is :meth:`Editor.spec` (method,
options, every edit's id, question, image, answer and payload, in the order applied); its
tensors are :meth:`Editor.state`. For the hook-based methods the backbone's weights are the
unedited ones; ``ft`` saves the edited weights and each edit's weight change. Other extra
modules of the source bundle (the retrieval projector) are carried over unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sugar.data.schema import Sample, Segment
from sugar.edit.base import Editor, build_editor
from sugar.edit.records import EditRequest
from sugar.edit.scope import ScopeSpace
from sugar.models.bundle import LoadedBundle, save_bundle

__all__ = ["EXTRA", "load_editor", "recorded_edits", "save_edited"]

EXTRA = "edits"


def recorded_edits(spec: dict[str, Any]) -> list[EditRequest]:
    """The edits a bundle's ``edits`` spec lists (no probes)."""
    out = []
    for record in spec["edits"]:
        segments = [Segment.image_(record["image"])] if record.get("image") else []
        prompt = Sample(record["id"], [*segments, Segment.text_(record["question"])], "edit")
        out.append(EditRequest(record["id"], prompt, record["answer"], record["payload"]))
    return out


def load_editor(bundle: LoadedBundle, root: str | Path = ".") -> Editor | None:
    """The editor of an edited bundle, attached to its backbone (None for an unedited one)."""
    if EXTRA not in bundle.extra_specs:
        return None
    spec, state = bundle.extra_specs[EXTRA], bundle.extras.get(EXTRA, {})
    options = dict(spec["options"])
    if spec["method"] == "unike":
        vocabulary = len(state.get("space.frequency", ()))
        space = ScopeSpace(int(bundle.model.hidden_size), int(options["scope_dim"]), vocabulary)
        saved = {k[len("space.") :]: v for k, v in state.items() if k.startswith("space.")}
        space.load_state_dict({**space.state_dict(), **saved})  # older bundles: no keys/truth
        options["space"] = space.eval()
    editor = build_editor(spec["method"], bundle.model, root, **options)
    editor.load_state(recorded_edits(spec), state)
    return editor


def save_edited(directory: str | Path, bundle: LoadedBundle, editor: Editor) -> str:
    """Write ``bundle`` with ``editor``'s edits to ``directory`` (atomic); returns the new
    identity. ``ValueError`` when the editor edits another model than the bundle's."""
    if editor.backbone is not bundle.model:
        raise ValueError("the editor must edit this bundle's own backbone")
    extras = {
        name: (bundle.extra_specs[name], bundle.extras.get(name, {}))
        for name in bundle.extra_specs
        if name != EXTRA
    }
    if editor.edits:
        extras[EXTRA] = (editor.spec(), editor.state())
    edits = ", ".join(editor.edits) or "none"
    card = (
        f"# sugar model bundle, edited\n\nSource: `{bundle.directory}` ({bundle.identity[:12]}).\n"
        f"Edit method: `{editor.method}`; edits: {edits}.\n\n"
        "Load it with `sugar.load(path)`; `model.json` lists every edit (extra module "
        "`edits`); `sugar edit --model PATH --remove ID --out NEW` removes one.\n"
    )
    return save_bundle(directory, bundle.model, extras=extras, config_yaml=bundle.config, card=card)
