"""End-to-end tests of ``--upstream`` for the four baselines against the stand-in checkouts of
``tests/upstream_stand_ins.py``. The commit check is relaxed with the documented environment switch."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ftcl_plugin.data import load_npy  # noqa: E402
from ftcl_plugin.data.synthetic import generate  # noqa: E402
from integrations.common.runner import main  # noqa: E402
from integrations.common.upstream_driver import load_init_from  # noqa: E402
from patches import _common  # noqa: E402
from tests.pickle_payloads import write_malicious, write_object_npy  # noqa: E402
from tests.upstream_stand_ins import ACMNET_FILES, COLA_FILES, STPN_FILES, WTALC_FILES, write_checkout  # noqa: E402


@pytest.fixture
def acm_checkout(tmp_path: Path) -> Path:
    return write_checkout(tmp_path / "ACM-Net", ACMNET_FILES)


@pytest.mark.parametrize(("name", "files", "layout"), [("cola", COLA_FILES, "cola"), ("wtalc", WTALC_FILES, "wtalc"),
                                                       ("stpn", STPN_FILES, "acmnet")])
def test_upstream_mode_end_to_end(name: str, files: dict[str, str], layout: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate(tmp_path / "data", layout=layout, num_classes=3, num_train=8, num_test=6, feature_dim=16,
                    max_length=40)
    checkout = write_checkout(tmp_path / name, files)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = tmp_path / "run"
    status = main(name, ["--upstream", str(checkout), "--data", str(data), "--iterations", "2", "--out", str(out),
                         "--no-plot", "--set", "optim.batch_size=4"])
    assert status == 0
    report = json.loads((out / "upstream.json").read_text())
    assert report["steps"] == 2 and report["ftcl_steps"] == 2
    assert "failed" not in report["upstream_evaluation"] or name == "stpn"
    assert "ftcl_loss" in (out / "metrics.csv").read_text().splitlines()[0]
    assert json.loads((out / "table.json").read_text())["rows"][0]["name"].endswith("(upstream) (last epoch)")
    leftovers = [n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "") or "").startswith(
        str(checkout.resolve()))]
    assert leftovers == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # STPN's import-time write is undone


@pytest.fixture
def marker(tmp_path: Path):  # noqa: ANN201
    """The file a malicious pickle creates if it ever runs; it must never appear."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle in the data ran code"


@pytest.mark.parametrize(("name", "files", "layout"), [("cola", COLA_FILES, "cola"), ("wtalc", WTALC_FILES, "wtalc"),
                                                       ("stpn", STPN_FILES, "acmnet")])
def test_upstream_mode_never_runs_a_pickle_from_the_data(name: str, files: dict[str, str], layout: str,
                                                         tmp_path: Path, marker: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate(tmp_path / "data", layout=layout, num_classes=3, num_train=8, num_test=6, feature_dim=16,
                    max_length=40)
    if name == "cola":  # a training feature file: the upstream's NpyFeature reads it with np.load
        video = (data / "split_train.txt").read_text().split()[0]
        evil = write_malicious(data / "features" / "train" / "rgb" / f"{video}.npy", marker)
        expected = rf"{re.escape(str(evil))} holds pickled data, which the cola session does not unpickle"
    elif name == "wtalc":  # labels_all.npy: only W-TALC's own Dataset reads it, as a pickled object array
        evil = data / "Thumos14reduced-Annotations" / "labels_all.npy"
        write_malicious(evil, marker, also=[["x"]] * 13)
        expected = (rf"The wtalc upstream's file {re.escape(str(evil))} holds a pickle that asks for the global "
                    rf"`{os.system.__module__}\.system`; it was refused")
    else:  # STPN's driver reads the training features with our loader to write the reproduction's layout
        video = (data / "split_train.txt").read_text().split()[0]
        evil = write_malicious(data / "train" / f"{video}.npy", marker)
        expected = rf"Feature file {re.escape(str(evil))} holds a pickled object array, which is not read here"
    checkout = write_checkout(tmp_path / name, files)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=expected):
        main(name, ["--upstream", str(checkout), "--data", str(data), "--iterations", "2", "--out",
                    str(tmp_path / "run"), "--no-plot", "--set", "optim.batch_size=4"])


def test_wtalc_upstream_reads_its_own_pickled_files_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # W-TALC's files as W-TALC ships them: protocol-2 pickles naming numpy.core.multiarray (numpy 1.x paths).
    data = generate(tmp_path / "data", layout="wtalc", num_classes=3, num_train=8, num_test=6, feature_dim=16,
                    max_length=40)
    for path in [data / "Thumos14reduced-I3D-JOINTFeatures.npy",
                 *(data / "Thumos14reduced-Annotations").glob("labels*.npy"),
                 data / "Thumos14reduced-Annotations" / "segments.npy"]:
        old = write_object_npy(path, list(load_npy(path, allow_objects=True)), protocol=2).read_bytes()
        path.write_bytes(old.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
        assert b"cnumpy.core.multiarray\n" in path.read_bytes()
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    out = tmp_path / "run"
    assert main("wtalc", ["--upstream", str(write_checkout(tmp_path / "wtalc", WTALC_FILES)), "--data", str(data),
                          "--iterations", "2", "--out", str(out), "--no-plot", "--set", "optim.batch_size=4"]) == 0
    assert json.loads((out / "upstream.json").read_text())["steps"] == 2


# --------------------------------------------------------------------------------------------------------------
# The --upstream route end to end, on the stand-in checkout (the commit check is relaxed by the documented switch).


def test_run_upstream_writes_the_clean_room_outputs(acm_checkout: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate(tmp_path / "data", num_classes=3, num_train=8, num_test=6, feature_dim=16, max_length=40)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    out = tmp_path / "run"
    status = main("acmnet", ["--upstream", str(acm_checkout), "--data", str(data), "--epochs", "1", "--out", str(out),
                             "--seed", "3", "--no-plot", "--set", "optim.batch_size=4"])
    assert status == 0
    for name in ("metrics.csv", "predictions.json", "table.md", "table.json", "upstream.json", "upstream.log"):
        assert (out / name).is_file(), name
    report = (out / "upstream.json").read_text()
    assert '"average_mAP": 0.25' in report and '"ftcl_steps": 2' in report
    assert "ftcl_loss" in (out / "metrics.csv").read_text().splitlines()[0]
    assert "main_thu" not in sys.modules


def test_run_upstream_never_unpickles_the_data(acm_checkout: Path, tmp_path: Path, marker: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A pickled .npy among the training features: the upstream's own loader (np.load inside the session) meets
    # it first. Before, the session made allow_pickle=True the default and this ran the payload.
    data = generate(tmp_path / "data", num_classes=3, num_train=8, num_test=6, feature_dim=16, max_length=40)
    video = (data / "split_train.txt").read_text().split()[0]
    evil = write_malicious(data / "train" / f"{video}.npy", marker)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    with pytest.raises(ValueError, match=rf"{re.escape(str(evil))} holds pickled data, which the acmnet session "
                                         r"does not unpickle \(the acmnet upstream reads no pickled file\)"):
        main("acmnet", ["--upstream", str(acm_checkout), "--data", str(data), "--iterations", "2", "--out",
                        str(tmp_path / "run"), "--no-plot", "--set", "optim.batch_size=4"])
    assert "main_thu" not in sys.modules and np.load.__module__ == "numpy"


def test_run_upstream_refuses_a_wrong_checkout_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_common.ALLOW_UNSUPPORTED_ENV, raising=False)
    checkout = write_checkout(tmp_path / "ACM-Net", {k: v for k, v in ACMNET_FILES.items() if k != "main_thu.py"})
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main("acmnet", ["--upstream", str(checkout), "--data", str(data), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "expected the file(s) main_thu.py" in capsys.readouterr().err


def _upstream_argv(checkout: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--upstream", str(checkout), "--data", str(data), "--iterations", "2", "--out", str(out), "--no-plot",
            "--set", "optim.batch_size=4", *extra]


def test_run_upstream_owns_its_run_folder(acm_checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate(tmp_path / "data", num_classes=3, num_train=8, num_test=6, feature_dim=16, max_length=40)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    out = tmp_path / "run"
    assert main("acmnet", _upstream_argv(acm_checkout, data, out)) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["run"]["protocol"] == "upstream" and record["meta"]["upstream"] == str(acm_checkout)
    first = (out / "predictions.json").read_bytes()
    # The same command again is the same run: it starts over in the folder and gives the same predictions.
    assert main("acmnet", _upstream_argv(acm_checkout, data, out)) == 0
    assert (out / "predictions.json").read_bytes() == first
    # Another run is refused by name, and nothing in the folder changes ...
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main("acmnet", _upstream_argv(acm_checkout, data, out, "--seed", "5"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "holds another run; its settings differ" in err and "train.seed: 0 -> 5" in err
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 0
    # ... unless --overwrite, which replaces it.
    assert main("acmnet", _upstream_argv(acm_checkout, data, out, "--seed", "5", "--overwrite")) == 0
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 5
    # The checkpoint is the upstream model's state_dict, read back weights-only as --init-from reads it.
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert set(state) == {"model"} and all(isinstance(v, torch.Tensor) for v in state["model"].values())


def test_run_upstream_starts_from_init_from_and_refuses_a_bad_one(acm_checkout: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate(tmp_path / "data", num_classes=3, num_train=8, num_test=6, feature_dim=16, max_length=40)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    first, second = tmp_path / "first", tmp_path / "second"
    assert main("acmnet", _upstream_argv(acm_checkout, data, first, "--no-ftcl")) == 0
    checkpoint = first / "checkpoints" / "last.pt"
    # Another seed draws other initial weights; one Adam step at the stand-in's lr 1e-4 then moves each weight by
    # about 1e-4, so ending within 1e-3 of the checkpoint means the run started from it.
    argv = _upstream_argv(acm_checkout, data, second, "--no-ftcl", "--seed", "7", "--init-from", str(checkpoint))
    argv[argv.index("--iterations") + 1] = "1"
    assert main("acmnet", argv) == 0
    loaded = torch.load(second / "checkpoints" / "last.pt", weights_only=True)["model"]
    start = torch.load(checkpoint, weights_only=True)["model"]
    assert set(loaded) == set(start)
    assert all(torch.allclose(loaded[key], start[key], rtol=0, atol=1e-3) for key in start)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main("acmnet", _upstream_argv(acm_checkout, data, tmp_path / "third", "--init-from", str(bad)))
    assert exit_info.value.code == 2
    assert f"argument --init-from: {bad} is not a readable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "third").exists()


@pytest.mark.parametrize("wrap", ["model_state_dict", "model", None])
def test_load_init_from_reads_every_upstream_checkpoint_format(wrap: str | None, tmp_path: Path) -> None:
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    state = source.state_dict()
    torch.save(state if wrap is None else {wrap: state}, tmp_path / "c.pt")
    load_init_from(target, str(tmp_path / "c.pt"))
    assert all(torch.equal(target.state_dict()[key], value) for key, value in state.items())
    load_init_from(target, None)  # no --init-from: nothing is read
