"""Every command explains itself: --help lists the options with types, defaults and text."""

from __future__ import annotations

import pytest

from fastssl.cli import main


def help_of(capsys, *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_train_help_lists_general_and_method_options(capsys):
    text = help_of(capsys, "train")
    assert "--epochs int (default: 20)  training epochs" in text
    assert "--temperature float (default: 0.5)  NT-Xent temperature" in text  # SimCLR's
    for group in ("run:", "data:", "model:", "optimisation:", "method 'simclr':"):
        assert f"\n{group}" in f"\n{text}"


def test_train_help_follows_the_method_and_its_defaults(capsys):
    text = help_of(capsys, "train", "--method", "swav")
    assert "--queue_length int (default: 0)" in text
    assert "--local_crops int (default: 2)" in text  # SwAV's own default, not the general 0
    assert "NT-Xent" not in text
    assert "--queue_size int (default: 65536)" in help_of(capsys, "train", "--config", "mocov2")


@pytest.mark.parametrize("command", ["eval", "data", "profile", "export"])
def test_other_commands_have_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:  # argparse exits 0 after printing its help
        raise SystemExit(main([command, "--help"]))
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_unknown_option_suggests_the_closest(capsys):
    assert main(["train", "--epoch", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fastssl: error: unknown option --epoch for method 'simclr'; did you mean "
                   "--epochs?"]
