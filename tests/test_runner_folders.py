"""Run folders: one run per folder, the lock, resume rules and atomic writes (integrations/common/rundir.py, files.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from integrations.common import files
from integrations.common.files import atomic_file, read_checkpoint, write_text
from integrations.common.rundir import LOCK_NAME, differences, fingerprint, folder_lock
from integrations.common.runner import main
from tests.tiny_runs import TINY as TINY_RUN
from tests.tiny_runs import tiny_dataset

REPO = Path(__file__).resolve().parents[1]
# Tiny runs (tests/tiny_runs.py): 3 steps per epoch on 12 videos.
TINY = [*TINY_RUN, "--set", "optim.lr=3e-3"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("tiny"))


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), *TINY, "--epochs", "2", "--out", str(out), *extra]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main("acmnet", argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# what counts as the same run


def test_fingerprint_keeps_what_changes_results_and_drops_the_rest() -> None:
    base = {"optim": {"lr": 0.1}, "train": {"epochs": 5, "iterations": 0}, "plot": {"videos": 3},
            "compare": {"pretrain_epochs": 2}, "ftcl": {"variant": "paper"},
            "meta": {"data": "./d", "data_root": "/home/a/.cache/ftcl-plugin/thumos14-like_small_standard_acmnet_v2"},
            "run": {"ftcl": True, "epochs": 5, "label": "ACM-Net + FTCL"}}
    moved = json.loads(json.dumps(base))
    moved["meta"].update(data="/abs/d", data_root="/other/machine/thumos14-like_small_standard_acmnet_v2")
    moved["run"]["label"] = "renamed"
    moved["plot"]["videos"] = 5
    moved["compare"]["pretrain_epochs"] = 9  # run.epochs holds the epochs this run trains
    assert differences(base, moved) == []
    assert fingerprint(base)["meta.data_root"] == "thumos14-like_small_standard_acmnet_v2"
    changed = json.loads(json.dumps(base))
    changed["ftcl"]["variant"] = "official"
    changed["train"]["iterations"] = 4
    assert differences(base, changed) == ['ftcl.variant: "paper" -> "official"', "train.iterations: 0 -> 4"]
    # A resumed run may change its step cap, nothing else.
    assert differences(base, changed, resume=True) == ['ftcl.variant: "paper" -> "official"']
    # Without FTCL the [ftcl] table does not count; FTCL on one side only is one line, not one per FTCL key.
    off = json.loads(json.dumps(changed))
    off["run"]["ftcl"] = False
    assert differences(base, off) == ["run.ftcl: true -> false", "train.iterations: 0 -> 4"]


# --------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_file_keeps_the_old_file_when_a_write_is_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    write_text(target, "old\n")
    for error in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(error)), atomic_file(target) as handle:
            handle.write("half of the new")
            raise error
        assert target.read_text() == "old\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]  # no temporary file left
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as a plain open() would create it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_every_output_file_is_written_atomically(tiny_data: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def spy(source: str, target: str) -> None:
        replaced.append(str(Path(target).relative_to(out)))
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", spy)
    out = tmp_path / "run"
    argv = [a for a in _args(tiny_data, out, "--best-on-test") if a != "--no-plot"]
    assert main("acmnet", argv) == 0
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == {"config.json", "metrics.csv", "predictions.json", "table.md", "table.json", "plot.png",
                       "checkpoints/last.pt", "checkpoints/best.pt"}
    # Every file in the folder arrived through os.replace of a temporary file; none was written in place.
    assert written <= set(replaced)


# --------------------------------------------------------------------------------------------------
# one run per folder


def test_the_same_run_repeated_in_one_folder_gives_the_same_table(tiny_data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # No --out, as in the no-argument main job: both runs use the default runs/<...> folder.
    monkeypatch.chdir(tmp_path)
    argv = [a for a in _args(tiny_data, tmp_path)[:-2]]
    assert main("acmnet", argv) == 0
    out = tmp_path / "runs" / "acmnet-thumos14-ftcl-seed0"
    first = json.loads((out / "table.json").read_text())
    assert main("acmnet", argv) == 0
    second = json.loads((out / "table.json").read_text())
    assert first["rows"] == second["rows"] and first["steps"] == second["steps"] == 6
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_a_different_run_is_refused_with_its_differences_unless_overwrite(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main("acmnet", _args(tiny_data, out, "--best-on-test")) == 0
    before = _snapshot(out)
    err = _refused(_args(tiny_data, out, "--seed", "1", "--set", "optim.lr=0.01"), capsys)
    assert f"{out} holds another run" in err
    assert "optim.lr: 0.003 -> 0.01" in err and "train.seed: 0 -> 1" in err and "--overwrite" in err
    assert _snapshot(out) == before  # untouched
    assert main("acmnet", _args(tiny_data, out, "--seed", "1", "--overwrite")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["seed"] == 1
    assert not (out / "checkpoints" / "best.pt").exists()  # the old run's file went with it


def test_unknown_run_files_are_refused_and_unrelated_files_kept(tiny_data: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mixed"
    (out / "checkpoints").mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    (out / "checkpoints" / "other.bin").write_text("mine too\n")
    (out / "project").mkdir()
    (out / "project" / "config.json").write_text('{"name": "not a run"}\n')
    (out / "metrics.csv").write_text("epoch\n1\n")  # a run's file without its config.json
    (out / ".metrics.csv.k1ll3d.tmp").write_text("epo")  # a write a killed run never finished
    (out / ".mine.tmp").write_text("mine\n")
    err = _refused(_args(tiny_data, out), capsys)
    assert "holds files of a run without a readable config.json (metrics.csv); choose another" in err
    assert main("acmnet", _args(tiny_data, out, "--overwrite")) == 0
    assert (out / "metrics.csv").read_text().startswith("epoch,step")
    assert main("acmnet", _args(tiny_data, out, "--seed", "1", "--overwrite")) == 0
    # --overwrite deleted the runs' files only: other files, and a sub-folder that is not a run, stay.
    assert (out / "notes.txt").read_text() == "mine\n" and (out / ".mine.tmp").is_file()
    assert not (out / ".metrics.csv.k1ll3d.tmp").exists()
    assert (out / "checkpoints" / "other.bin").read_text() == "mine too\n"
    assert (out / "project" / "config.json").is_file()
    # A config.json that is not a run's is never taken for one, nor deleted.
    (out / "project" / "table.md").write_text("x\n")
    err = _refused(_args(tiny_data, out / "project", "--overwrite"), capsys)
    assert f"{out / 'project' / 'config.json'} is not the config.json of a run of these scripts" in err
    assert (out / "project" / "config.json").read_text() == '{"name": "not a run"}\n'


def test_compare_and_single_runs_do_not_share_a_folder(tiny_data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    compare = ["--data", str(tiny_data), *TINY, "--compare", "--out", str(out), "--set", "compare.pretrain_epochs=1",
               "--set", "compare.finetune_epochs=1"]
    assert main("acmnet", compare) == 0
    pretrain = (out / "pretrain" / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert main("acmnet", compare) == 0  # the same protocol again: allowed, and the finished pre-training reused
    assert (out / "pretrain" / "checkpoints" / "last.pt").stat().st_mtime_ns == pretrain
    err = _refused(_args(tiny_data, out), capsys)
    assert 'run.protocol: "compare" -> (absent)' in err


# --------------------------------------------------------------------------------------------------
# resume


@pytest.fixture(scope="module")
def stopped_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped by its step cap inside epoch 2, ready to be resumed (the refusals below leave it as it is)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert main("acmnet", _args(tiny_data, out, "--iterations", "4")) == 0
    return out


@pytest.mark.parametrize(("extra", "line"), [
    (["--seed", "1"], "train.seed: 0 -> 1"),
    (["--set", "optim.lr=0.01"], "optim.lr: 0.003 -> 0.01"),
    (["--no-ftcl"], "run.ftcl: true -> false"),
    (["--variant", "official"], 'ftcl.variant: "paper" -> "official"'),
    (["--epochs", "5"], "run.epochs: 2 -> 5"),
])
def test_resume_with_changed_settings_is_refused_by_key(tiny_data: Path, stopped_run: Path, extra: list[str],
                                                        line: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = stopped_run
    before = _snapshot(out)
    err = _refused([*_args(tiny_data, out, "--resume"), *extra], capsys)
    assert f"cannot --resume the run in {out} with different settings" in err
    assert f"  {line}\n" in err
    assert _snapshot(out) == before


def test_resume_names_a_damaged_or_missing_checkpoint(tiny_data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main("acmnet", _args(tiny_data, out, "--iterations", "4")) == 0
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    err = _refused(_args(tiny_data, out, "--resume"), capsys)
    assert f"--resume: {last} is not a readable checkpoint (truncated, corrupted" in err
    assert "weights_only" not in err
    torch.save({"model": {}}, last)  # readable, but not a run checkpoint
    err = _refused(_args(tiny_data, out, "--resume"), capsys)
    assert f"--resume: {last} is not a run checkpoint of these scripts (it has no 'optimizer'" in err
    last.unlink()
    err = _refused(_args(tiny_data, out, "--resume"), capsys)
    assert f"--resume: {last} does not exist" in err
    err = _refused(_args(tiny_data, tmp_path / "never", "--resume"), capsys)
    assert "holds no run with a readable config.json" in err


# --------------------------------------------------------------------------------------------------
# two processes, kills and Ctrl-C

_HOLDER = """
import sys
from pathlib import Path
from integrations.common.rundir import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_is_refused_while_the_first_holds_the_folder_and_a_killed_runs_lock_is_cleared(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    acquired = threading.Event()

    def waiter() -> None:  # what a table run does for a pre-training that another one is training
        with folder_lock(out, wait=True):
            acquired.set()

    thread = threading.Thread(target=waiter)
    try:
        assert holder.stdout.readline() == "locked\n"
        err = _refused(_args(tiny_data, out), capsys)
        assert f"{out} is in use by another run (pid {holder.pid}" in err
        assert not (out / "config.json").exists()  # the refused run wrote nothing
        thread.start()
        holder.kill()  # SIGKILL: no cleanup; the kernel drops its lock, the lock file stays behind
        holder.wait(timeout=30)
        assert acquired.wait(timeout=60)
        thread.join(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    err = capsys.readouterr().err
    assert f"waiting for {out}: in use by pid {holder.pid}" in err
    assert f"note: {out} was locked by a run that is no longer running (pid {holder.pid}" in err
    assert not (out / LOCK_NAME).exists()
    # What a killed run leaves: its lock file, whose lock nobody holds. The next run reports and clears it.
    (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "command": "train.py --killed"}) + "\n")
    assert main("acmnet", _args(tiny_data, out)) == 0
    err = capsys.readouterr().err
    assert f"note: {out} was locked by a run that is no longer running (pid {holder.pid}" in err
    assert not (out / LOCK_NAME).exists()


def test_ctrl_c_exits_130_with_the_checkpoint_and_the_resume_command(tiny_data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["--data", str(tiny_data), *TINY, "--epochs", "100000", "--out", str(out)]
    # Python turns SIGINT into KeyboardInterrupt only if the signal is not ignored when it starts.
    run = subprocess.Popen([sys.executable, str(REPO / "integrations/acmnet/train.py"), *argv], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        last = out / "checkpoints" / "last.pt"
        while not last.exists() and run.poll() is None:
            subprocess.run(["sleep", "0.05"], check=True)
        assert run.poll() is None, run.stderr.read()
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, err
    assert "Traceback" not in err
    state = read_checkpoint(last, "test")
    assert f"interrupted. Last checkpoint: {last} (after epoch {state['epoch']}, step {state['step']})." in err
    command = err.rsplit("Continue with: ", 1)[1].strip()
    assert command.endswith(f"--out {out} --resume") and "--epochs 100000" in command
    assert not (out / LOCK_NAME).exists()
    # The printed command continues the run (capped here by --iterations, which a resume may change).
    resumed = [*command.split()[2:], "--iterations", str(int(state["step"]) + 2)]
    assert main("acmnet", resumed) == 0
    assert read_checkpoint(last, "test")["step"] == int(state["step"]) + 2


def test_experiment_runs_are_reused_refused_when_different_and_replaced_with_overwrite(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from integrations.run_experiments import main as experiments_main

    work = tmp_path / "work"
    argv = ["--table", "5", "--baselines", "acmnet", "--seeds", "1", "--data", str(tiny_data), "--pretrain-epochs",
            "1", "--finetune-epochs", "1", "--work", str(work), "--results", str(tmp_path / "results"),
            *[a for a in TINY if a != "--no-plot"]]
    assert experiments_main(argv) == 0
    pretrain = work / "pretrain" / "thumos14" / "acmnet" / "seed0"
    arm = work / "table5" / "acmnet" / "seed0" / "ftcl"
    stamps = [(p / "checkpoints" / "last.pt").stat().st_mtime_ns for p in (pretrain, arm)]
    # A compare folder written before it had a config.json of its own (only its arms) is taken over as it is.
    (arm.parent / "config.json").unlink()
    assert experiments_main(argv) == 0  # the same table again: every finished run is reused
    assert [(p / "checkpoints" / "last.pt").stat().st_mtime_ns for p in (pretrain, arm)] == stamps
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        experiments_main([*argv, "--set", "optim.lr=0.01"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"{arm.parent} holds another run" in err and "optim.lr: 0.003 -> 0.01" in err
    assert experiments_main([*argv, "--set", "optim.lr=0.01", "--overwrite"]) == 0
    assert json.loads((pretrain / "config.json").read_text())["optim"]["lr"] == 0.01
    assert json.loads((arm / "config.json").read_text())["optim"]["lr"] == 0.01
