"""Issue 18 item 6, the inputs ``test_error_lines.py`` did not reach. Every hostile input the
issue lists, and where its test is (``E`` = test_error_lines.py, ``H`` = this file,
``C`` = test_checkpoint_format.py):

====  =================================================================  =====================
 #    input                                                              test
====  =================================================================  =====================
 1    ``meta`` nested 200,000 deep                                       E deep_meta
 2    a 5,000-character image name                                       E long_image_name
 3    a null byte in an image path                                       E null_byte_path
 4    a null byte in a text (valid Unicode: accepted)                    H null_byte_text
 5    a lone surrogate in an image path                                  E surrogate_path
 6    a lone surrogate in a text of a data file                          E surrogate_text
 7    a lone surrogate in a text on the command line (was TypeError)     H surrogate_argument
 8    a directory where a data or config file is expected                E directory_where...
 9    a directory where an image is expected                             E directory_as_image
10    a directory where an output file is expected (named a temp file)   H directory_as_output
11    a ``model.json`` of the wrong shape                                E manifests_of...
12    an index manifest of the wrong shape                               E manifests_of...
13    a truncated checkpoint, through ``sugar train --resume``           C + H truncated
      (and a control-branch checkpoint: was a SafetensorError traceback)
14    a torn last line in ``log.jsonl`` (reports and recipes: traceback)  E + H torn_log
15    an image error met while embedding or indexing (an image that      H undecodable_image
      verifies but cannot be decoded had no file and line)
16    an unterminated CSV quote                                          E unterminated_csv
====  =================================================================  =====================
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sugar.cli import app
from sugar.control.checkpoint import load_control_checkpoint, save_control_checkpoint
from sugar.data.schema import SchemaError, Segment
from sugar.eval.report import write_report
from sugar.io import read_log
from sugar.models.bundle import save_bundle
from sugar.models.prefix import RetrievalProjector
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer
from sugar.recipes.jobs import last_validation

REPO = Path(__file__).resolve().parents[2]
TEXT = {"kind": "text", "text": "a red circle", "role": "context"}


def _one_error_line(args: list[object], *expected: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output.splitlines()[-1] if result.output else ""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert output.startswith("sugar: error: "), result.output
    for part in expected:
        assert part in output, output
    return output


@dataclass
class Tiny:
    root: Path
    bundle: Path
    index: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A tiny bundle with a projector and an index of one text (under a second)."""
    root = tmp_path_factory.mktemp("hostile")
    tokenizer = Tokenizer.train(["a red circle", "a blue square"], vocab_size=300)
    torch.manual_seed(0)
    model = TinyMLLM(
        tokenizer, width=32, layers=2, heads=2, max_positions=256, feature_cache=None
    ).eval()
    projector = RetrievalProjector(model.hidden_size, 16).eval()
    spec = {**projector.spec, "image_pool": "mean"}
    save_bundle(root / "bundle", model, extras={"projector": (spec, projector.state_dict())})
    data = root / "kb.jsonl"
    data.write_text(json.dumps({"id": "k", "segments": [TEXT]}) + "\n")
    built = CliRunner().invoke(
        app, ["index", "build", str(root / "index"), "--model", str(root / "bundle"),
              "--data", str(data)],
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    return Tiny(root, root / "bundle", root / "index")


def test_null_byte_text_is_accepted_like_any_character(tiny: Tiny) -> None:
    data = tiny.root / "nul.jsonl"
    text = dict(TEXT, text="a red\x00circle")
    data.write_text(json.dumps({"id": "n", "segments": [text]}) + "\n")
    assert CliRunner().invoke(app, ["data", "validate", str(data)]).exit_code == 0
    result = CliRunner().invoke(app, ["embed", "--model", str(tiny.bundle), "--data", str(data)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x[x.index("{") :]) for x in result.output.splitlines() if "{" in x]
    assert [row["id"] for row in rows] == ["n"] and len(rows[0]["vector"]) == 16


def test_surrogate_argument_is_one_line(tiny: Tiny) -> None:
    bad = "a red \udcff circle"  # what Python makes of the byte 0xff in sys.argv
    what = "contains a lone surrogate"
    _one_error_line(["embed", "--model", tiny.bundle, "--text", bad], what)
    _one_error_line(["search", "--model", tiny.bundle, "--index", tiny.index, bad], what)
    _one_error_line(["ask", "--model", tiny.bundle, "--index", tiny.index, bad], what)
    with pytest.raises(SchemaError, match=what):  # the API's inputs meet the same check
        Segment.text_(bad)


def test_directory_as_output_is_named_and_nothing_is_left(tiny: Tiny, tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("image,caption\na.png,a red circle\n")
    (tmp_path / "a.png").write_bytes(_png(valid=True))
    out = tmp_path / "out"
    out.mkdir()
    _one_error_line(
        ["data", "convert", "image_caption_csv", tmp_path / "pairs.csv", out],
        f"{out}: is a directory, not a file",
    )  # fmt: skip
    _one_error_line(
        ["embed", "--model", tiny.bundle, "--text", "hi", "--out", out],
        f"{out}: is a directory, not a file",
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "out", "pairs.csv"]


def _png(valid: bool) -> bytes:
    """A 16x16 RGB PNG; with ``valid=False`` its chunks are intact (``verify`` passes) but its
    pixel data is not a zlib stream (decoding fails)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\x80" * 48 for _ in range(16))
    pixels = zlib.compress(rows) if valid else b"not a zlib stream at all"
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_undecodable_image_is_named_by_file_and_line(tiny: Tiny, tmp_path: Path) -> None:
    (tmp_path / "good.png").write_bytes(_png(valid=True))
    (tmp_path / "bad.png").write_bytes(_png(valid=False))
    data = tmp_path / "d.jsonl"
    lines = [{"id": f"s{i}", "segments": [{"kind": "image", "image": name, "role": "context"}]}
             for i, name in enumerate(["good.png", "bad.png"])]  # fmt: skip
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    where = f"{data}:2: segments[0].image='bad.png': unreadable image"
    _one_error_line(["data", "validate", data], where)
    _one_error_line(["embed", "--model", tiny.bundle, "--data", data], where)
    _one_error_line(["index", "build", tmp_path / "ix", "--model", tiny.bundle, "--data", data],
                    where)  # fmt: skip
    _one_error_line(["index", "add", tiny.index, "--model", tiny.bundle, "--data", data], where)
    assert not (tmp_path / "ix").exists()


def test_torn_log_is_read_by_reports_and_recipes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    log = run / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0, "val_t2i_r1": 0.5}\n'
                   '{"step": 3, "lo')  # fmt: skip
    assert [r["step"] for r in read_log(log)] == [1, 2]
    assert last_validation(run) == {"val_t2i_r1": 0.5}
    write_report(tmp_path / "report", {"a": {}}, {}, logs={"a": log})
    assert (tmp_path / "report" / "loss_curves.png").is_file()
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')  # torn in the middle: named
    with pytest.raises(ValueError, match=r"log\.jsonl:2: not a log record"):
        last_validation(run)


@pytest.mark.slow  # about 6 s: a world and a one-step run through the CLI
def test_truncated_checkpoint_through_train_resume(tmp_path: Path) -> None:
    from sugar.data.world import generate_world

    world = tmp_path / "world"
    generate_world(world, seed=1, train_per_task=12, val_per_task=2, test_per_task=2)
    args = [
        "train", "-c", REPO / "configs" / "base.yaml", "-c", REPO / "configs" / "smoke.yaml",
        f"data.root={world}", f"run.output_dir={tmp_path / 'run'}", "train.steps=2",
        "train.checkpoint_every=1", "train.eval_every=0", "model.feature_cache=null",
    ]  # fmt: skip
    first = CliRunner().invoke(app, [str(a) for a in [*args, "train.steps=1"]])
    assert first.exit_code == 0, first.output
    state = tmp_path / "run" / "checkpoints" / "step-000001" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    _one_error_line([*args, "--resume"], "state.safetensors", "checksum mismatch")


def test_truncated_control_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    branch = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(branch.parameters())
    branch(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(0)
    directory = save_control_checkpoint(tmp_path, branch, optimizer, generator, {"step": 1})
    assert load_control_checkpoint(tmp_path, branch, optimizer, generator) == {"step": 1}
    other = torch.nn.Linear(3, 4)  # another branch's shapes
    with pytest.raises(ValueError, match="not a checkpoint of this branch"):
        load_control_checkpoint(tmp_path, other, torch.optim.AdamW(other.parameters()), generator)
    tensors = directory / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"tensors\.safetensors: not a readable safetensors"):
        load_control_checkpoint(tmp_path, branch, optimizer, generator)
    (directory / "state.json").write_text('{"step": 1')
    with pytest.raises(ValueError, match=r"state\.json: not valid JSON"):
        load_control_checkpoint(tmp_path, branch, optimizer, generator)
