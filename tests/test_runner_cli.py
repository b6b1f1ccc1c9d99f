"""A user's mistakes on the training and experiment command lines: a short message, exit status 2, no traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from integrations.common.config import check_override, known_keys, load_config
from integrations.common.runner import main, resume_command
from integrations.run_experiments import main as experiments_main

TINY = ["--set", "data.train_segments=32", "--set", "data.test_segments=64", "--set", "optim.batch_size=4",
        "--no-plot", "--epochs", "1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ftcl_plugin.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny")
    return Path(generate(root / "data", num_train=8, num_test=4, feature_dim=16, max_length=40, num_classes=4))


def _error(run, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:  # noqa: ANN001 - a main function
    with pytest.raises(SystemExit) as stop:
        run(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err and "usage:" not in err
    assert len(err.strip().splitlines()) <= 2, err
    return err


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=abc", "'optim.lr=abc': optim.lr must be a number (like its default 0.001), but got 'abc'."),
    ("optim.lr=-1", "optim.lr must be a finite number > 0.0, but got -1.0."),
    ("optim.lr=nan", "optim.lr must be a finite number > 0.0, but got nan."),
    ("optim.batch_size=0", "optim.batch_size must be a finite number >= 1, but got 0."),
    ("train.epochs=2.5", "train.epochs must be an integer (like its default 40), but got 2.5."),
    ("ftcl.enabled=1", "ftcl.enabled must be true or false (like its default true), but got 1."),
    ("model.topk_divisors=3", "model.topk_divisors must be a list (like its default [8, 3, 3]), but got 3."),
    ("optim.lrr=1e-3", "unknown config key 'optim.lrr'; did you mean optim.lr"),
    ("optm.lr=1e-3", "unknown config key 'optm.lr'; did you mean optim.lr?"),
    ("model.nothing_like_it=1", "unknown config key 'model.nothing_like_it'; [model] has branch_weights, dropout"),
    ("optim=1", "optim is a table, not a value; set one of its keys (optim.batch_size, optim.betas, optim.lr"),
    ("novalue", "an override must look like section.key=value"),
    ("localization.nms=nope", "the [localization] settings are not valid: `nms` must be one of 'hard', 'soft'"),
    ("data.test_sampling=nope", "data.test_sampling must be one of random, acmnet_random, crop, uniform, "
                                "acmnet_uniform, uniform_fixed, full, but got 'nope'."),
    ("data.sampler=nope", "data.sampler must be one of random, class_pair, similar_pairs, but got 'nope'."),
    ("evaluation.preset=nope", "evaluation.preset must be one of thumos14, "),
])
def test_bad_overrides_are_named(override: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(lambda argv: main("acmnet", argv), ["--set", override], capsys)
    assert "integrations/acmnet/train.py: error: argument --set: " in err
    assert message in err


def test_overrides_keep_their_types() -> None:
    known = known_keys(load_config("acmnet", "thumos14", builtin_data=True))
    assert check_override(known, ["optim", "lr"], 1) == 1.0 and isinstance(check_override(known, ["optim", "lr"], 1),
                                                                           float)
    assert check_override(known, ["data", "train_sampling"], "uniform") == "uniform"
    # Keys no shipped TOML lists but FTCL and LocalizationConfig accept, with their types.
    assert check_override(known, ["ftcl", "fsd_weight"], 2) == 2.0
    assert check_override(known, ["localization", "cas_thresholds"], [0.1, 0.2]) == [0.1, 0.2]
    with pytest.raises(ValueError, match="ftcl.miner"):
        check_override(known, ["ftcl", "miner"], "x")  # an object, not a config value


def test_bad_ftcl_settings_are_reported_before_training(tiny_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(lambda argv: main("acmnet", argv), ["--data", str(tiny_data), "--out", str(tmp_path / "r"),
                                                      "--set", "ftcl.variant=nope", *TINY], capsys)
    assert "argument --set: the [ftcl] settings are not valid: `variant` must be one of 'paper', 'official'" in err
    assert not (tmp_path / "r").exists()


def _bad_checkpoints(folder: Path) -> dict[str, Path]:
    torch.save({"model": {"w": torch.ones(3)}}, folder / "good.pt")
    paths = {"truncated": folder / "truncated.pt", "garbage": folder / "garbage.pt", "empty": folder / "empty.pt",
             "pickle": folder / "pickle.pt", "object": folder / "object.pt", "folder": folder / "dir.pt"}
    paths["truncated"].write_bytes((folder / "good.pt").read_bytes()[:300])
    paths["garbage"].write_bytes(b"garbage, not a checkpoint\n")
    paths["empty"].write_bytes(b"")
    paths["pickle"].write_bytes(pickle.dumps({"a": 1}))
    torch.save({"model": {"w": _Opaque()}}, paths["object"])
    paths["folder"].mkdir()
    return paths


class _Opaque:
    """A class a weights-only load refuses (it would have to import and build it)."""


@pytest.mark.parametrize(("kind", "message"), [
    ("truncated", "is not a readable checkpoint (truncated, corrupted, or not written by torch.save)."),
    ("garbage", "is not a readable checkpoint (truncated, corrupted, or not written by torch.save)."),
    ("empty", "is not a readable checkpoint (truncated, corrupted, or not written by torch.save)."),
    ("pickle", "is not a readable checkpoint (truncated, corrupted, or not written by torch.save)."),
    ("object", "holds Python objects besides tensors and plain containers, so it is not loaded"),
    ("folder", "is not a file"),
])
def test_bad_init_from_checkpoints_are_named_without_torch_advice(kind: str, message: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_checkpoints(tmp_path)[kind]
    err = _error(lambda argv: main("acmnet", argv), ["--init-from", str(path)], capsys)
    assert f"argument --init-from: {path} {message}" in err
    assert "weights_only" not in err and "Weights only" not in err


def test_init_from_another_models_checkpoint_is_named(tiny_data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.ones(3)}}, other)
    err = _error(lambda argv: main("acmnet", argv), ["--data", str(tiny_data), "--out", str(tmp_path / "r"),
                                                      "--init-from", str(other), *TINY], capsys)
    assert f"--init-from: {other} does not match the model: missing [" in err
    assert not (tmp_path / "r").exists()  # refused before the output folder was touched


@pytest.mark.parametrize(("argv", "message"), [
    (["--out", "{file}"], "argument --out: {file} is a file, not a folder"),
    (["--out", "{file}/run"], "argument --out: {file} is a file, not a folder"),
    (["--data", "{empty}"], "argument --data: cannot read {empty} as the acmnet layout: "),
    (["--data", "{missing}"], "argument --data: {missing} is not a directory"),
    (["--resume", "--overwrite", "--out", "{empty}"], "argument --overwrite: not allowed with --resume"),
])
def test_bad_folders_are_named(argv: list[str], message: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    names = {"file": tmp_path / "a_file", "empty": tmp_path / "empty", "missing": tmp_path / "missing"}
    names["file"].write_text("x\n")
    names["empty"].mkdir()
    argv = [word.format(**names) for word in argv]
    err = _error(lambda a: main("acmnet", a), argv, capsys)
    assert message.format(**names) in err


def test_resume_command_repeats_the_arguments_with_resume() -> None:
    command = resume_command("acmnet", ["--seed", "1", "--overwrite", "--set", "optim.lr=1e-3"], Path("runs/a b"))
    assert command == "python integrations/acmnet/train.py --seed 1 --set optim.lr=1e-3 --out 'runs/a b' --resume"
    assert resume_command("cola", ["--out", "x"], Path("x")).endswith("cola/train.py --out x --resume")


@pytest.mark.parametrize(("argv", "message"), [
    (["--table", "5", "--set", "optim.lrr=1"], "argument --set: 'optim.lrr=1': unknown config key 'optim.lrr'"),
    (["--table", "3", "--set", "optim.lr=abc"], "optim.lr must be a number"),
    (["--table", "4", "--set", "localization.nms=nope"], "the [localization] settings are not valid: `nms` must"),
    (["--table", "5", "--work", "{file}"], "argument --work: {file} is a file, not a folder"),
    (["--table", "5", "--results", "{file}/x"], "argument --results: {file} is a file, not a folder"),
    (["--table", "5", "--iterations", "0"], "argument --iterations: expected a positive integer"),
])
def test_experiment_command_line_errors(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a_file"
    file.write_text("x\n")
    err = _error(experiments_main, [word.format(file=file) for word in argv], capsys)
    assert message.format(file=file) in err
