"""Issue 18 item 9: property-based fuzzing (hypothesis) of every reader of user files. Any input
ends in a result or in the project's own error type (``DataError`` for data, ``ConfigError``
for configs, ``ValueError`` for a bundle manifest), never another exception.

The default lane tries ``SUGAR_FUZZ_EXAMPLES`` inputs per target (60); set it higher for a
longer hunt (``SUGAR_FUZZ_EXAMPLES=2000 pytest tests/reliability/test_fuzz.py
--hypothesis-show-statistics``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sugar.config import ConfigError, load_config
from sugar.data.convert import CONVERTERS
from sugar.data.jsonl import DataError, read_samples
from sugar.models.bundle import read_manifest

EXAMPLES = int(os.environ.get("SUGAR_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip

KEYS = ["id", "segments", "kind", "text", "image", "role", "meta", "task", "caption",
        "images", "annotations", "image_id", "file_name", "conversations", "from", "value",
        "texts", "text_list", "image_info", "matched_text_index", "context", "target",
        "query", "instruction", "positive", "negatives", "intent"]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["a.png", "../x.png", "/etc/passwd", "<image>",
                                           "human", "gpt", "context", "target", "image", "text",
                                           "", "\x00", "\ud800"]),
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=30,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)  # lone surrogates survive as escapes


LINE = st.one_of(JSON.map(_dumps), st.text(max_size=40), st.binary(max_size=40))


@contextlib.contextmanager
def _file(content: str | bytes, name: str) -> Iterator[Path]:
    """``content`` as the file ``name`` in a fresh directory, removed afterwards (one per
    example: hypothesis runs hundreds, and /tmp must not keep them)."""
    with tempfile.TemporaryDirectory(prefix="sugar-fuzz-") as directory:
        path = Path(directory) / name
        data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        path.write_bytes(data)
        yield path


def _join(lines: list[str | bytes]) -> bytes:
    return b"\n".join(x if isinstance(x, bytes) else x.encode("utf-8", "replace") for x in lines)


@FUZZ
@given(st.lists(LINE, max_size=6))
def test_the_jsonl_reader(lines: list[str | bytes]) -> None:
    with _file(_join(lines), "data.jsonl") as path, contextlib.suppress(DataError):
        read_samples(path, path.parent, check_images=True)


REQUIRED_OPTIONS = {"instructed_retrieval": {"split": "test"}}
CSV_CELL = st.one_of(st.text(max_size=8), st.sampled_from(['"', '""', "a.png", ",", "\n", '"x']))


@FUZZ
@given(
    fmt=st.sampled_from(sorted(CONVERTERS)),
    body=st.one_of(
        JSON.map(_dumps),
        st.lists(JSON.map(_dumps), max_size=4).map("\n".join),
        st.lists(st.lists(CSV_CELL, max_size=4).map(",".join), max_size=5).map(
            lambda rows: "image,caption,id\n" + "\n".join(rows)
        ),
        st.text(max_size=60),
    ),
)
def test_every_converter(fmt: str, body: str) -> None:
    options = REQUIRED_OPTIONS.get(fmt, {})
    with _file(body, "source") as path, contextlib.suppress(DataError):
        CONVERTERS[fmt](path, root=path.parent, **options)


SECTIONS = ["run", "data", "model", "train", "structure", "teacher", "world", "contrastive"]
YAML_VALUE = st.one_of(
    SCALARS.map(lambda v: json.dumps(v) if not isinstance(v, str) else v),
    st.sampled_from([".inf", ".nan", "[1, 2]", "{a: 1}", "1e400", "yes", "~", "!!python/none",
                     "*x", "&x 1", "'", "- -"]),
)  # fmt: skip


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.dictionaries(
            st.sampled_from(SECTIONS),
            st.dictionaries(st.text(max_size=12) | st.sampled_from(["lr", "seed", "alpha",
                                                                   "steps", "delta"]),
                            YAML_VALUE, max_size=3),
            max_size=3,
        ).map(lambda d: "\n".join(f"{s}:\n" + "".join(f"  {k!r}: {v}\n" for k, v in items.items())
                                  for s, items in d.items())),
    ),
    overrides=st.lists(
        st.tuples(st.sampled_from(["train.lr", "run.seed", "structure.delta", "model.width",
                                   "data.train", "nope.x", "train", ""]), YAML_VALUE)
        .map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=20),
        max_size=3,
    ),
)  # fmt: skip
def test_the_config_parser(text: str, overrides: list[str]) -> None:
    with _file(text, "config.yaml") as path, contextlib.suppress(ConfigError):
        load_config(path, overrides)


@FUZZ
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {"format": st.just("sugar-bundle"), "version": st.sampled_from([1, 2, "1"])},
            optional={k: JSON for k in ("family", "spec", "extras", "identity", "files")},
        ),
    ).map(_dumps)
    | st.text(max_size=40)
)
def test_the_bundle_manifest_reader(text: str) -> None:
    with _file(text, "model.json") as path, contextlib.suppress(ValueError):
        read_manifest(path.parent)
