"""Tests of the upstream patch machinery (checks, session, compatibility, attachment) against the stand-in
checkouts of ``tests/upstream_stand_ins.py`` (CI has no upstream code)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# `python -m pytest` (make test) has the repository root on sys.path; plain `pytest` does not.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ftcl_plugin import FTCL  # noqa: E402
from patches import _common, acmnet, cola, get, stpn, wtalc  # noqa: E402
from patches._common import UpstreamError, UpstreamSession, check_checkout  # noqa: E402
from tests.pickle_payloads import write_malicious, write_object_npy  # noqa: E402
from tests.upstream_stand_ins import ACMNET_FILES, write_checkout  # noqa: E402


def spec_for(root: Path, base: _common.UpstreamSpec) -> _common.UpstreamSpec:
    """``base`` with the stand-in files' own fingerprints (so the checkout counts as supported)."""
    files = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in base.files}
    return dataclasses.replace(base, files=files)


@pytest.fixture
def acm_checkout(tmp_path: Path) -> Path:
    return write_checkout(tmp_path / "ACM-Net", ACMNET_FILES)


@pytest.fixture
def marker(tmp_path: Path):  # noqa: ANN201
    """The file a malicious pickle creates if it ever runs; it must never appear."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle in the data ran code"


SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system on Linux)


def _labels() -> torch.Tensor:
    # Two identical-label pairs and a disjoint pair: FTCL has positives and negatives.
    return torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])


# --------------------------------------------------------------------------------------------------------------


def test_import_changes_nothing() -> None:
    for name in ("acmnet", "cola", "wtalc", "stpn"):
        assert get(name).SPEC.name == name
    assert "int" not in vars(np)
    assert "cuda" not in vars(torch.Tensor)
    assert not any(name.startswith("main_thu") for name in sys.modules)
    with pytest.raises(ValueError, match="`name` must be one of acmnet, cola, wtalc, stpn, but got 'bsn'"):
        get("bsn")


def test_session_imports_checkout_and_cleans_up(acm_checkout: Path) -> None:
    sentinel = types.ModuleType("utils")
    sys.modules["utils"] = sentinel
    path_before = list(sys.path)
    load_before, cuda_before = np.load, nn.Module.cuda
    try:
        with UpstreamSession(acm_checkout, spec_for(acm_checkout, acmnet.SPEC), device="cpu") as up:
            assert up.identified_by == "content fingerprint of 6 files"
            pieces = acmnet.load(up)
            assert sys.path[0] == str(acm_checkout.resolve())
            assert sys.modules["utils"] is not sentinel
            assert np.int is int  # the removed alias is back inside the session
            assert torch.zeros(2).cuda().device.type == "cpu"
            assert next(nn.Linear(2, 2).cuda().parameters()).device.type == "cpu"
            torch.set_default_tensor_type("torch.cuda.FloatTensor")  # W-TALC does this at import
            assert torch.zeros(1).device.type == "cpu"
            if "wandb" in up.stand_ins:
                sys.modules["wandb"].init(project="x").log({"a": 1})
            assert pieces.ACMNet.__module__ == "model.ACMNet"
            with pytest.raises(UpstreamError, match="already active; the four upstreams share module names"):
                UpstreamSession(acm_checkout, up.spec).__enter__()
        assert sys.modules["utils"] is sentinel
        leftovers = [n for n, m in sys.modules.items()
                     if str(getattr(m, "__file__", "") or "").startswith(str(acm_checkout.resolve()))]
        assert leftovers == []
        assert not {"main_thu", "model", "config", "dataset", "model.ACMNet"} & set(sys.modules)
        assert "wandb" not in sys.modules or "wandb" not in up.stand_ins
        assert sys.path == path_before
        assert "int" not in vars(np) and np.load is load_before and nn.Module.cuda is cuda_before
        assert "cuda" not in vars(torch.Tensor)
    finally:
        sys.modules.pop("utils", None)


def test_session_np_load_unpickles_only_declared_files_and_only_safely(acm_checkout: Path, tmp_path: Path,
                                                                      marker: Path) -> None:
    spec = dataclasses.replace(spec_for(acm_checkout, acmnet.SPEC), pickled=("*-Annotations/*.npy",))
    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(3.0))
    (tmp_path / "train").mkdir()
    (tmp_path / "X-Annotations").mkdir()
    evil = write_malicious(tmp_path / "train" / "v.npy", marker)
    evil_annotation = write_malicious(tmp_path / "X-Annotations" / "segments.npy", marker)
    labels = write_object_npy(tmp_path / "X-Annotations" / "labels.npy", [["a", "a"], ["b"]], protocol=2)
    numpy_load = np.load
    with UpstreamSession(acm_checkout, spec) as up:
        assert up.spec.pickled == ("*-Annotations/*.npy",)
        assert np.load(plain).tolist() == [0.0, 1.0, 2.0]
        assert np.load(str(labels)).tolist() == [["a", "a"], ["b"]]  # declared: restricted unpickling
        with pytest.raises(ValueError, match=rf"{re.escape(str(evil))} holds pickled data, which the acmnet "
                                             r"session does not unpickle \(it unpickles only the files the "
                                             r"upstream's own loader reads as pickles \(\*-Annotations/\*\.npy\)"):
            np.load(evil)
        with open(evil, "rb") as handle, pytest.raises(ValueError, match="holds pickled data"):
            np.load(handle)
        for call in (lambda: np.load(evil, allow_pickle=True), lambda: np.load(evil_annotation)):
            with pytest.raises(ValueError, match=rf"The acmnet upstream's file .* holds a pickle that asks for the "
                                                 rf"global `{SYSTEM}`; it was refused"):
                call()
    assert np.load is numpy_load
    with pytest.raises(ValueError, match="allow_pickle=False"):
        np.load(labels)  # nothing was widened: numpy's own default is back


def test_session_keeps_joblib_work_in_process(acm_checkout: Path) -> None:
    import joblib  # the `test` extra installs it, as a user with the upstreams' requirements has it

    # Worker processes start without the session's numpy aliases (np.float, ...); ACM-Net's and CoLA's evaluators
    # use joblib.Parallel(n_jobs>1), so inside a session its tasks run in this process.
    tasks = [joblib.delayed(os.getpid)() for _ in range(4)]
    with UpstreamSession(acm_checkout, spec_for(acm_checkout, acmnet.SPEC)):
        assert joblib.Parallel(n_jobs=4)(tasks) == [os.getpid()] * 4
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(lambda: np.float)() for _ in range(2)) == [float, float]
    assert os.getpid() not in joblib.Parallel(n_jobs=2)(tasks)  # the default (process) backend is back


def test_an_installed_package_that_fails_to_import_gets_its_stand_in(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # As tensorboard_logger 0.1.0 (a W-TALC requirement) does with protobuf >= 4.
    (tmp_path / "tensorboard_logger.py").write_text("raise TypeError('Descriptors cannot be created directly.')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorboard_logger", raising=False)
    from patches._stand_ins import usable

    assert not usable("tensorboard_logger") and usable("numpy")
    checkout = write_checkout(tmp_path / "W", {"uses_logger.py": "from tensorboard_logger import log_value\n"})
    spec = dataclasses.replace(wtalc.SPEC, files={}, modules=("uses_logger",))
    with UpstreamSession(checkout, spec) as up:
        assert up.stand_ins == ["tensorboard_logger"]
        assert up.import_module("uses_logger").log_value("loss", 1.0) is None
    assert "tensorboard_logger" not in sys.modules


def test_acmnet_attach_hooks_optimizer_and_loss(acm_checkout: Path) -> None:
    with UpstreamSession(acm_checkout, spec_for(acm_checkout, acmnet.SPEC)) as up:
        pieces = acmnet.load(up)
        torch.manual_seed(0)
        args = acmnet.build_args(up, pieces, feature_dim=8, action_cls_num=3)
        model = pieces.ACMNet(args)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=5e-5)
        criterion = pieces.ACMLoss()
        ftcl = FTCL(feature_dim=8, warmup_steps=0, max_grad_ratio=None)  # full weight at once: a wiring test
        x, y = torch.randn(4, 20, 8), _labels()

        def step_loss() -> torch.Tensor:
            out = model(x)
            loss, parts = criterion(out[0], out[1], out[2], y, out[6], out[3], out[4], out[5], out[7])
            return loss

        plain = step_loss()
        attachment = acmnet.attach(model, optimizer, criterion, ftcl)
        assert len(optimizer.param_groups) == 2
        group = optimizer.param_groups[1]
        assert group["lr"] == 3e-4 and group["weight_decay"] == 5e-5
        assert {id(p) for p in group["params"]} == {id(p) for p in ftcl.parameters()}
        with_ftcl = step_loss()
        assert attachment.calls == {"embedding": 1, "attention": 1}
        assert with_ftcl.item() == pytest.approx(plain.item() + attachment.history[-1], rel=1e-5)
        assert attachment.history[-1] != 0.0
        with_ftcl.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ftcl.parameters())
        model.eval()
        with torch.no_grad():
            step_loss()
        assert len(attachment.history) == 1  # no FTCL term at evaluation time
        attachment.remove()
        assert "forward" not in vars(criterion)
        model.train()
        step_loss()
        assert attachment.calls == {"embedding": 1, "attention": 1}


def test_cola_attach() -> None:
    class Actionness(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f_embed = nn.Sequential(nn.Conv1d(6, 10, 3, padding=1), nn.ReLU())
            self.f_cls = nn.Sequential(nn.Conv1d(10, 3, 1, bias=False), nn.ReLU())

    class CoLA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.actionness_module = Actionness()

        def forward(self, x: torch.Tensor) -> tuple:
            emb = self.actionness_module.f_embed(x.permute(0, 2, 1))
            cas = self.actionness_module.f_cls(emb).permute(0, 2, 1)
            return torch.softmax(cas.mean(1), 1), {}, cas.sum(2), cas

    class TotalLoss(nn.Module):
        def forward(self, video_scores, label, contrast_pairs):  # noqa: ANN001, ANN202
            loss = nn.functional.binary_cross_entropy(video_scores, label / label.sum(1, keepdim=True))
            return loss, {"Loss/Action": loss}

    torch.manual_seed(0)
    net, criterion = CoLA(), TotalLoss()
    assert cola.embedding_dim(net) == 10
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-4)
    attachment = cola.attach(net, optimizer, criterion, FTCL(feature_dim=10, warmup_steps=0, max_grad_ratio=None))
    x, y = torch.rand(4, 16, 6), _labels()
    scores, pairs, actionness, _ = net(x)
    assert torch.allclose(attachment.captured["attention"], actionness)
    loss, parts = criterion(scores, y, pairs)
    assert "Loss/FTCL" in parts and parts["Loss/Total"].item() == pytest.approx(loss.item())
    assert len(optimizer.param_groups) == 2


def test_wtalc_attach_rides_on_casl() -> None:
    class Model(nn.Module):
        def __init__(self, n_feature: int, n_class: int) -> None:
            super().__init__()
            self.fc = nn.Linear(n_feature, n_feature)
            self.classifier = nn.Linear(n_feature, n_class)
            self.dropout = nn.Dropout(0.7)

        def forward(self, inputs: torch.Tensor, is_training: bool = True) -> tuple:
            x = torch.relu(self.fc(inputs))
            x = self.dropout(x) if is_training else x
            return x, self.classifier(x)

    def casl(x, element_logits, seq_len, n_similar, labels, device):  # noqa: ANN001, ANN202
        return element_logits.sum() * 0.0 + 1.0

    train_module = types.ModuleType("train")
    train_module.CASL = casl
    torch.manual_seed(0)
    model = Model(8, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    attachment = wtalc.attach(model, optimizer, train_module, FTCL(feature_dim=8, warmup_steps=0, max_grad_ratio=None),
                              casl_weight=0.5)
    features, labels = torch.randn(4, 12, 8), _labels()
    seq_len = np.array([12, 10, 12, 9])
    hidden, logits = model(features)
    expected_attention = wtalc.label_guided_attention(logits, labels)
    value = train_module.CASL(hidden, logits, seq_len, 2, labels, torch.device("cpu"))
    assert value.item() == pytest.approx(1.0 + attachment.history[-1] / 0.5, rel=1e-5)
    assert attachment.history[-1] != 0.0
    assert torch.equal(expected_attention[1], logits[1, :, 0])  # video 1 is labelled with class 0 only
    attachment.remove()
    assert train_module.CASL is casl
    with pytest.raises(UpstreamError, match="whose weight 1 - Lambda is 0.0; use --Lambda below 1"):
        wtalc.attach(model, None, train_module, None, casl_weight=0.0)


def test_stpn_attach_and_layout(tmp_path: Path) -> None:
    class TemporalProposal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.relu, self.fc2 = nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)
            self.sigmoid, self.fc3 = nn.Sigmoid(), nn.Linear(6, 3)

        def forward(self, inp: torch.Tensor) -> tuple:
            attention = self.sigmoid(self.fc2(self.relu(self.fc1(inp))))
            return self.sigmoid(self.fc3((attention * inp).sum(1))), attention

    torch.manual_seed(0)
    model, criterion = TemporalProposal(), nn.BCELoss()
    attachment = stpn.attach(model, torch.optim.Adam(model.parameters()), criterion,
                             FTCL(feature_dim=5, warmup_steps=0, max_grad_ratio=None))
    attachment.lengths = torch.tensor([10, 8, 10, 7])
    outputs, attention = model(torch.randn(4, 10, 6))
    assert torch.allclose(attachment.captured["attention"], attention.squeeze(-1))
    plain = nn.functional.binary_cross_entropy(outputs, _labels())
    assert criterion(outputs, _labels()).item() == pytest.approx(plain.item() + attachment.history[-1], rel=1e-5)
    # The reproduction's loader cuts exactly this many 49-frame windows at its strides.
    for windows in (1, 30, 623, 624, 625, 1300):
        frames = stpn.frames_for(windows)
        stride = 24 if frames <= 15000 else 48 if frames <= 30000 else 96
        assert sum(1 for item in range(0, frames + 1, stride) if item + 49 <= frames) == windows
    gt = {"database": {"v1": {"subset": "validation", "duration": 3.0,
                              "annotations": [{"segment": [0.5, 1.0], "label": "b"}]}}}
    root = stpn.write_layout(tmp_path / "stpn", gt, ["a", "b"], {"train": [("v1", np.ones((4, 6), np.float32))]})
    assert (root / "thumos14_val.json").read_text() == '{"v1": {"actions": [[2, 0.5, 1.0]], "frame": 121}}'
    row = np.load(root / "features" / "v1" / "flow" / "4.npy")
    assert row.shape == (1024,) and row[:3].tolist() == [1.0, 1.0, 1.0] and not row[3:].any()


# --------------------------------------------------------------------------------------------------------------
# Refusals


def test_missing_file_is_refused(acm_checkout: Path) -> None:
    (acm_checkout / "model" / "ACMNet.py").unlink()
    with pytest.raises(UpstreamError, match=r"is not a checkout of ispc-lab/ACM-Net@4d38dc6: expected the file\(s\) "
                                            r"model/ACMNet.py"):
        check_checkout(acm_checkout, acmnet.SPEC)
    with pytest.raises(UpstreamError, match="is not a directory"):
        check_checkout(acm_checkout / "nowhere", acmnet.SPEC)


def test_other_commit_is_refused(acm_checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_common.ALLOW_UNSUPPORTED_ENV, raising=False)
    with pytest.raises(UpstreamError, match=r"has no \.git, and these files differ from ispc-lab/ACM-Net@4d38dc6: "
                                            r"main_thu\.py, config/model_config\.py"):
        check_checkout(acm_checkout, acmnet.SPEC)
    git = acm_checkout / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("1" * 40 + "\n")
    with pytest.raises(UpstreamError, match=r"is checked out at 111111111111, but the acmnet patch supports only "
                                            r"ispc-lab/ACM-Net@4d38dc6 \(4d38dc66ad724fc4d3497b5d8eed5b1ef71f1e16\)"):
        check_checkout(acm_checkout, acmnet.SPEC)
    (git / "refs" / "heads" / "main").write_text(acmnet.SPEC.commit + "\n")
    assert check_checkout(acm_checkout, acmnet.SPEC) == "git HEAD 4d38dc6"
    (git / "refs" / "heads" / "main").write_text("2" * 40 + "\n")
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    assert check_checkout(acm_checkout, acmnet.SPEC).startswith("unsupported (")


def test_changed_signature_is_refused(acm_checkout: Path) -> None:
    path = acm_checkout / "model" / "ACMNet.py"
    path.write_text(path.read_text().replace("def forward(self, input_features)", "def forward(self, x, mask=None)")
                    .replace("input_features.permute", "x.permute"))
    with UpstreamSession(acm_checkout, spec_for(acm_checkout, acmnet.SPEC)) as up:
        with pytest.raises(UpstreamError, match=r"model/ACMNet.py: ACMNet.forward has parameters \(x, mask\), but the "
                                                r"acmnet patch expects \(input_features\) as at ispc-lab/ACM-Net@4d38dc6"):
            acmnet.load(up)
    with pytest.raises(UpstreamError, match="CoLA has no attribute 'actionness_module', which it has at "
                                            "zhang-can/CoLA@d21f1b5"):
        cola.attach(nn.Linear(2, 2), None, nn.MSELoss(), None)


def test_failed_upstream_import_names_the_module(acm_checkout: Path) -> None:
    (acm_checkout / "main_thu.py").write_text("import a_module_that_does_not_exist\n")
    with UpstreamSession(acm_checkout, spec_for(acm_checkout, acmnet.SPEC)) as up:
        with pytest.raises(UpstreamError, match="importing 'main_thu' from .* failed: ModuleNotFoundError"):
            acmnet.load(up)
    assert "main_thu" not in sys.modules
