import pytest

from fastssl.config import Config, ConfigError, load_preset, parse_overrides
from fastssl.methods import resolve_config as resolve


def test_defaults_resolve_with_method_args():
    cfg = resolve()
    assert isinstance(cfg, Config) and cfg.method == "simclr"
    assert cfg.args.temperature == 0.5


def test_overrides_are_typed():
    cfg = resolve(None, parse_overrides(["--epochs=3", "--lr=0.5", "--compile=off",
                                         "--global_scale=0.3,0.9", "--deterministic=true",
                                         "--temperature=0.2"]))
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 0.5 and cfg.global_scale == (0.3, 0.9) and cfg.deterministic is True
    assert cfg.args.temperature == 0.2


@pytest.mark.parametrize("override, message", [
    ("--epochs=three", "'epochs': expected an integer"),
    ("--no_such_key=1", "unknown option --no_such_key"),
    ("--epoch=3", "did you mean --epochs"),
    ("--temprature=0.1", "did you mean --temperature"),
    ("--deterministic=maybe", "expected true/false"),
    ("--optimizer=adam", "'optimizer': 'adam' is not one of"),
    ("--global_scale=0.5", "expected 2 values"),
    ("--global_scale=0.9,0.1", "0 < min <= max <= 1"),
    ("--method=nope", "unknown method 'nope'"),
])
def test_bad_values_are_rejected_naming_the_key(override, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        resolve(None, parse_overrides([override]))


def test_override_forms():
    assert parse_overrides(["--lr=0.1", "--batch-size", "3", "--resume", "--x", "-1"]) == \
        {"lr": "0.1", "batch_size": "3", "resume": "true", "x": "-1"}
    with pytest.raises(ConfigError, match="--key=value"):
        parse_overrides(["epochs=3"])


def test_preset_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_preset(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_preset(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_preset(listy)


def test_round_trip_through_dict():
    cfg = resolve({"epochs": 7, "temperature": 0.1})
    again = resolve(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
