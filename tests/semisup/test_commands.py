"""``fastssl finetune | distill | selftrain`` end to end on a tiny shapes set (in process), and
resume of each from a mid-run checkpoint."""

import dataclasses
import shutil

import pytest
import torch
import yaml

from fastssl.cli import main
from fastssl.config import Config
from fastssl.metrics import read
from fastssl.semisup.commands import resolve_command
from fastssl.semisup.models import COMMANDS
from tests.helpers import tiny_shapes

SMALL = ["--crop_size=16", "--workers=0", "--progress=false", "--log_every=1"]
# 4 train images per class: a few steps per epoch keep the five runs with resume fast


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("data"), per_class=4)


@pytest.fixture(scope="module")
def ssl(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl")
    assert main(["train", "--method", "simclr_v2", "--data", str(data), "--epochs", "1",
                 "--out", str(out), "--batch_size=20", "--proj_hidden_dim=24", "--proj_dim=8",
                 "--backbone=tiny_cnn",
                 "--eval_every=-1", *SMALL]) == 0
    return out / "checkpoints" / "last.pt"


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip().splitlines()[-1]


def _state(out):
    return torch.load(out / "checkpoints" / "last.pt", weights_only=False)


def _check_resume(capsys, args, out, tmp_path, stage=""):
    """A run resumed from its own end-of-epoch-1 copy ends with the same weights and losses."""
    again = tmp_path / "again"
    shutil.copytree(out, again)
    src = again / stage if stage else again
    shutil.copy(src / "checkpoints" / "epoch_0001.pt", src / "checkpoints" / "last.pt")
    line = _run(capsys, *args, "--out", str(again), "--resume")
    a, b = _state(out / stage if stage else out), _state(src)
    assert a["step"] == b["step"]
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=1e-5, rtol=1e-4, msg=k)
    losses = [(r["step"], round(r["loss"], 4)) for r in read(src / "metrics.jsonl") if "loss" in r]
    ref = [(r["step"], round(r["loss"], 4))
           for r in read((out / stage if stage else out) / "metrics.jsonl") if "loss" in r]
    assert losses == ref
    return line


@pytest.fixture(scope="module")
def finetuned(data, ssl, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    args = ["finetune", "--checkpoint", str(ssl), "--from_head_layer", "--labels", "30",
            "--data", str(data), "--epochs", "2", "--batch_size=10", "--checkpoint_every=1",
            *SMALL]
    assert main([*args, "--out", str(out)]) == 0
    return out, args


def test_finetune_from_the_head_layer_and_its_resume(finetuned, capsys, tmp_path):
    out, args = finetuned
    assert len((out / "labels.txt").read_text().splitlines()) == 30
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == "finetune" and cfg["head_dim"] == 24 and cfg["num_classes"] == 10
    evals = [r for r in read(out / "metrics.jsonl") if "top1" in r or "top1_init" in r]
    assert len(evals) == 2 and all(0 <= next(iter(r.values())) <= 100 for r in evals)
    line = _check_resume(capsys, args, out, tmp_path)
    assert line.startswith("top1=") and "init_top1=" in line and "steps=6" in line
    assert cfg["backbone"] == "tiny_cnn"  # adopted from the checkpoint


@pytest.mark.parametrize("student, head", [("", 24), ("small_cnn", 0)])
def test_distill_self_and_smaller_student_and_resume(finetuned, data, capsys, tmp_path,
                                                     student, head):
    out = tmp_path / "run"
    args = ["distill", "--teacher", str(finetuned[0] / "checkpoints" / "last.pt"),
            "--data", str(data), "--epochs", "2" if not student else "1", "--batch_size=20",
            "--alpha=0.5",
            "--labels=20", "--checkpoint_every=1", *SMALL,
            *(["--student", student] if student else [])]
    line = _run(capsys, *args, "--out", str(out))
    assert line.startswith("top1=") and "teacher_top1=" in line
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["backbone"] == (student or "tiny_cnn") and cfg["head_dim"] == head
    assert "loss_distill" in read(out / "metrics.jsonl")[1]
    if not student:
        _check_resume(capsys, args, out, tmp_path)


def test_selftrain_iterations_hard_threshold_and_resume(data, capsys, tmp_path):
    out = tmp_path / "st"
    args = ["selftrain", "--labels", "20", "--data", str(data), "--epochs", "2",
            "--backbone=tiny_cnn", "--batch_size=20", "--teacher_epochs=1",
            "--teacher_batch_size=10",
            "--pseudo=hard", "--threshold=0.11", "--iterations=2", "--checkpoint_every=1",
            *SMALL]
    line = _run(capsys, *args, "--out", str(out))
    assert line.startswith("top1=")
    assert all(f" {k}_top1=" in line for k in ("teacher", "student1", "student2"))
    for stage in ("teacher", "student_1", "student_2"):
        assert (out / stage / "checkpoints" / "last.pt").is_file()
    pseudo = _state(out / "student_1")["model"]["pseudo"]
    assert set(pseudo.sum(1).tolist()) <= {0.0, 1.0}  # hard: one-hot rows or none
    labelled = _state(out / "student_1")["model"]["human"] >= 0
    assert labelled.sum() == 20 and pseudo[labelled].sum() == 0
    teacher = (out / "teacher" / "checkpoints" / "last.pt").stat().st_mtime_ns
    _check_resume(capsys, args, out, tmp_path, stage="student_2")
    # the finished teacher stage is resumed at its end: its weights are not retrained
    assert _state(tmp_path / "again" / "teacher")["step"] == _state(out / "teacher")["step"]
    assert teacher == (out / "teacher" / "checkpoints" / "last.pt").stat().st_mtime_ns


@pytest.mark.parametrize("args, message", [
    (["finetune", "--from_head_layer"], "--from_head_layer needs --checkpoint"),
    (["distill"], "fastssl distill needs --teacher"),
    (["finetune", "--labels", "5"], "cannot cover the 10 classes"),
    (["selftrain", "--method", "byol"], "--method is not an option of fastssl selftrain"),
])
def test_errors_are_one_line(data, tmp_path, capsys, args, message):
    assert main([*args, "--data", str(data), "--out", str(tmp_path), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastssl: error: ") and message in err[-1]


def test_an_ssl_checkpoint_is_not_a_teacher(ssl, data, tmp_path, capsys):
    assert main(["distill", "--teacher", str(ssl), "--data", str(data), "--out",
                 str(tmp_path), *SMALL]) == 2
    assert "is a 'simclr_v2' checkpoint, not a classifier" in capsys.readouterr().err


@pytest.mark.parametrize("preset, optimizer", [("finetune_lars", "lars"), ("finetune_sgd", "sgd"),
                                               ("finetune_adamw", "adamw")])
def test_paper_presets_and_options_resolve(preset, optimizer):
    cfg = resolve_command("finetune", ["--config", preset, "--labels=1%"])
    assert cfg.optimizer == optimizer and cfg.args.labels == "1%" and cfg.method == "finetune"
    general = {f.name for f in dataclasses.fields(Config)}
    for cls in COMMANDS.values():  # an Args field named like a general key could never be set
        assert not general & {f.name for f in dataclasses.fields(cls.Args)}
