"""The integration runner end to end on a tiny synthetic dataset: training, FTCL wiring, evaluation, resume, flags."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from integrations.acmnet.model import build_model
from integrations.common.report import markdown_table, paired_stats
from integrations.common.runner import main
from tests.tiny_runs import TINY as TINY_RUN
from tests.tiny_runs import tiny_dataset

REPO = Path(__file__).resolve().parents[1]
# Tiny runs (tests/tiny_runs.py) with a learning rate that moves a tiny model within a few steps.
TINY = [*TINY_RUN, "--set", "optim.lr=3e-3"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("tiny"))


def _run(args: list[str]) -> int:
    return main("acmnet", args)


def _metrics(out: Path) -> list[dict[str, str]]:
    import csv

    with (out / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("ftcl", [True, False])
def test_tiny_training_learns_and_evaluates(tiny_data: Path, tmp_path: Path, ftcl: bool) -> None:
    out = tmp_path / "run"
    flag = "--ftcl" if ftcl else "--no-ftcl"
    assert _run(["--data", str(tiny_data), "--epochs", "6", "--out", str(out), flag, *TINY]) == 0
    rows = _metrics(out)
    assert len(rows) == 6
    assert all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["base_loss"])) for r in rows)
    # The baseline's own loss (the FTCL term jumps with the number of pairs per batch) falls over training.
    base = [float(r["base_loss"]) for r in rows]
    assert sum(base[-2:]) < sum(base[:2])
    assert ("ftcl_loss" in rows[0]) == ftcl
    table = json.loads((out / "table.json").read_text())
    assert set(table["rows"][0]["summary"]) >= {"0.1", "0.5", "0.7"}
    assert "| method |" in (out / "table.md").read_text()
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions["results"]) <= {p.stem for p in (tiny_data / "test").glob("*.npy")}
    config = json.loads((out / "config.json").read_text())
    assert config["ftcl"]["enabled"] is ftcl and config["optim"]["lr"] == 3e-3


def test_ftcl_parameters_receive_gradients() -> None:
    from ftcl_plugin import FTCL

    torch.manual_seed(0)
    model = build_model({}, num_classes=3, feature_dim=16)
    # no ramp and no cap: the default ramp gives the first call weight 0 (it only measures)
    model.ftcl = FTCL(feature_dim=model.embedding_dim, warmup_steps=0, max_grad_ratio=None)
    features = torch.randn(4, 24, 16)
    labels = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    output = model(features)
    loss, parts = model.loss(output, labels, 0)
    loss = loss + model.ftcl(output.embedding, model.ftcl_attention(output), labels)
    loss.backward()
    ftcl_grads = [p.grad for p in model.ftcl.parameters()]
    assert ftcl_grads and all(g is not None and torch.isfinite(g).all() for g in ftcl_grads)
    assert any(g.abs().sum() > 0 for g in ftcl_grads)
    assert model.embed.weight.grad.abs().sum() > 0
    assert set(parts) == {"ins_ce", "con_ce", "bak_ce", "guide", "feature", "sparsity"}


def test_acmnet_shapes_and_invariants() -> None:
    model = build_model({}, num_classes=20, feature_dim=64).eval()
    output = model(torch.randn(2, 50, 64))
    assert output.embedding.shape == (2, 50, 64) and output.cas.shape == (2, 50, 20)
    assert output.video_scores.shape == (2, 20) and output.attention.shape == (2, 50)
    assert torch.allclose(output.extras["log_p_ins"].exp().sum(-1), torch.ones(2))
    assert torch.equal(model(torch.ones(1, 5, 64)).cas, model(torch.ones(1, 5, 64)).cas)  # eval deterministic
    paper = build_model({}, num_classes=20, feature_dim=2048)
    # The layers of ispc-lab/ACM-Net @4d38dc6 model/ACMNet.py on THUMOS14 (D = 2048, 20 classes + background),
    # counted by hand: Conv1d(2048, 2048, k=3) 12_584_960 + Conv1d(2048, 3, k=1) 6_147 + Linear(2048, 21) 43_029.
    assert sum(p.numel() for p in paper.parameters()) == 12_634_136


def test_resume_reproduces_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    common = ["--data", str(tiny_data), *TINY]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _run([*common, "--epochs", "3", "--out", str(straight)]) == 0
    # Stop mid-epoch (the cap falls inside epoch 2: 3 batches per epoch), then resume to the end.
    assert _run([*common, "--epochs", "3", "--iterations", "4", "--out", str(split)]) == 0
    assert _run([*common, "--epochs", "3", "--resume", "--out", str(split)]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 9
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["loss"] for r in _metrics(straight)] == [r["loss"] for r in _metrics(split)]


def test_compare_pairs_both_arms_from_one_checkpoint(tiny_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    args = ["--data", str(tiny_data), "--compare", "--out", str(out), "--set", "compare.pretrain_epochs=2",
            "--set", "compare.finetune_epochs=1", *TINY]
    assert _run(args) == 0
    text = capsys.readouterr().out
    assert "ACM-Net + FTCL" in text and "difference (with - without)" in text
    report = json.loads((out / "compare.json").read_text())
    assert report["init_from"].endswith("pretrain/checkpoints/last.pt")
    for arm in ("baseline", "ftcl"):
        config = json.loads((out / arm / "config.json").read_text())
        assert config["run"]["init_from"] == report["init_from"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--epochs", "0"], "--epochs: expected a positive integer"),
    (["--fsd-weight", "-1"], "--fsd-weight: expected a non-negative number"),
    (["--variant", "nope"], "--variant: invalid choice"),
    (["--layout", "cola"], "--layout: only meaningful with --data"),
    (["--resume"], "--resume: needs --out"),
    (["--set", "novalue"], "--set: an override must look like section.key=value"),
    (["--data", "/nonexistent/dir"], "--data: /nonexistent/dir is not a directory"),
    (["--init-from", "/nonexistent.pt"], "--init-from: /nonexistent.pt is not a file"),
])
def test_bad_flags_give_clear_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as error:
        _run(argv)
    assert error.value.code == 2
    assert message in capsys.readouterr().err


def test_paired_stats_and_table() -> None:
    stats = paired_stats([1.0, 2.0, -0.5])
    assert stats["mean"] == pytest.approx(2.5 / 3) and stats["positive"] == 2 and stats["negative"] == 1
    assert markdown_table(["a", "b"], [["x", 1.234]]) == "| a | b |\n|---|---|\n| x | 1.2 |"


def test_ddp_two_processes_match_single_process(tiny_data: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    # No dropout and uniform clips, so both runs see the same inputs; with --ddp-gather FTCL mines pairs over the
    # global batch, so the update equals the single-process one up to the order of float sums.
    args = ["--data", str(tiny_data), "--epochs", "2", "--ftcl", "--set", "model.dropout=0.0",
            "--set", "data.train_sampling='uniform'", *TINY, "--set", "ftcl.warmup_steps=0",
            "--set", "ftcl.max_grad_ratio=0"]
    single, double = tmp_path / "single", tmp_path / "ddp"
    assert _run([*args, "--out", str(single)]) == 0
    with socket.socket() as probe:  # a free port, so concurrent test runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={port}", str(REPO / "integrations/acmnet/train.py"),
                    *args, "--ddp-gather", "--out", str(double)], check=True, cwd=REPO, capture_output=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
    second = torch.load(double / "checkpoints" / "last.pt", weights_only=True)
    assert sum(row["positive_pairs"] for row in first["history"]) > 0
    a, b = first["model"], second["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


def test_train_script_help_runs() -> None:
    result = subprocess.run([sys.executable, str(REPO / "integrations/acmnet/train.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--compare" in result.stdout
