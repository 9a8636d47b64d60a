from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sugar.config import (
    ConfigError,
    StructureConfig,
    SugarConfig,
    config_from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
    to_yaml,
)


def test_defaults_are_valid_and_typed() -> None:
    cfg = load_config()
    assert isinstance(cfg, SugarConfig)
    assert cfg.structure == StructureConfig()
    assert cfg.structure.delta == "auto"


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  seed: 3\nstructure:\n  alpha: 0.25\n  delta: 0.7\n")
    cfg = load_config(path, ["structure.alpha=0.5", "run.output_dir=runs/x"])
    assert cfg.run.seed == 3
    assert cfg.structure.alpha == 0.5  # override wins over the file
    assert cfg.structure.delta == 0.7
    assert cfg.run.output_dir == "runs/x"


def test_unknown_key_in_file_names_file_key_and_nearest(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("structure:\n  alpah: 0.5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'structure\.alpah'.*did you mean 'alpha'"):
        load_config(path)


def test_unknown_override_names_key_and_nearest() -> None:
    with pytest.raises(ConfigError, match=r"'structure\.gak_normalization'.*'gak_normalisation'"):
        load_config(None, ["structure.gak_normalization=length"])
    with pytest.raises(ConfigError, match=r"'strucure\.alpha'.*did you mean 'structure'"):
        load_config(None, ["strucure.alpha=1"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("run.seed=1.5", r"run\.seed=1\.5: expected an integer"),
        ("run.seed=true", r"run\.seed=True: expected an integer"),
        ("structure.alpha=yes", r"structure\.alpha=True: expected a number"),
        ("structure.triple_kernel=1", r"structure\.triple_kernel=1: expected true or false"),
        ("structure.sigma_mode=pair", r"structure\.sigma_mode='pair': must be one of"),
        ("structure.delta=fast", r"structure\.delta='fast'"),
        ("structure.delta=-1", r"structure\.delta=-1\.0: must be > 0"),
        ("structure.delta_pairs=10", r"structure\.delta_pairs=10: must be >= 1000"),
        ("structure.target_slope=0", r"structure\.target_slope=0\.0: must be a finite number"),
        ("structure.target_slope=.nan", r"structure\.target_slope=nan: must be a finite number"),
        ("run", r"bad override 'run': expected dotted\.key=value"),
        ("run..seed=1", r"bad override"),
        ("run.seed.x=1", r"'run\.seed\.x'.*'seed' is not a section"),
        ("run.seed=[1", r"not valid YAML"),
    ],
)
def test_bad_values_and_overrides_name_the_field(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_numbers_written_the_pyyaml_way_are_accepted() -> None:
    # PyYAML reads 1e-4 (no dot) as a string; a float field accepts it.
    assert load_config(None, ["structure.alpha=1e-4"]).structure.alpha == 1e-4
    assert load_config(None, ["structure.delta=2"]).structure.delta == 2.0


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("structure: 3\n")
    with pytest.raises(ConfigError, match="structure: expected a mapping"):
        load_config(path)
    path.write_text("- a\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_round_trip_reproduces_the_resolved_config(tmp_path: Path) -> None:
    cfg = load_config(
        None, ["structure.delta=0.31", "structure.gak_normalisation=length", "run.seed=7"]
    )
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert again == cfg
    assert to_yaml(again) == to_yaml(cfg)
    assert config_from_dict(yaml.safe_load(to_yaml(cfg))) == cfg
    assert to_dict(cfg)["structure"]["delta"] == 0.31


def test_parse_override_values_are_yaml() -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


def test_gradient_checkpointing_on_a_built_in_family_is_refused_not_ignored() -> None:
    # The built-in families do not recompute activations; accepting the flag would record a
    # setting that never applied.
    for family in ("tiny", "minilm"):
        with pytest.raises(
            ConfigError, match=rf"gradient_checkpointing.*built-in family '{family}'"
        ):
            load_config(None, [f"model.family={family}", "model.gradient_checkpointing=true"])
    cfg = load_config(None, ["model.family=llava", "model.gradient_checkpointing=true"])
    assert cfg.model.gradient_checkpointing
