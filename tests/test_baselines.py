"""Clean-room CoLA, W-TALC and STPN (integrations/{cola,wtalc,stpn}): shapes, losses, FTCL hook-up, inference and
the cheap acceptance checks of each model (parameter counts, invariants, hand-checked loss terms)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from integrations.cola.model import CoLA, hard_rings, masked_topk_mean, snippet_contrast  # noqa: E402
from integrations.stpn.model import STPN  # noqa: E402
from integrations.wtalc.model import WTALC, co_activity_loss  # noqa: E402
from tests.tiny_runs import TINY as TINY_RUN  # noqa: E402
from tests.tiny_runs import tiny_dataset  # noqa: E402

NAMES = ["cola", "wtalc", "stpn"]
B, T, D, C = 2, 16, 64, 5


def _model_config(name: str, dataset: str = "thumos14") -> dict:
    from integrations.common.config import load_config

    config = load_config(name, dataset, builtin_data=False)
    return config.get("model", {}) | {"_all": config}


def _build(name: str, *, feature_dim: int = D, num_classes: int = C, dataset: str = "thumos14", seed: int = 0):
    torch.manual_seed(seed)
    module = importlib.import_module(f"integrations.{name}.model")
    return module.build_model(_model_config(name, dataset), num_classes=num_classes, feature_dim=feature_dim)


def _batch(batch: int = B, length: int = T, dim: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed))


def _labels(rows: list[int], num_classes: int = C) -> torch.Tensor:
    return torch.eye(num_classes)[rows]


@pytest.mark.parametrize("dataset", ["thumos14", "activitynet"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_finite_loss(name, dataset):
    model = _build(name, dataset=dataset)
    out = model(_batch())
    assert out.embedding.shape == (B, T, model.embedding_dim)
    assert out.attention.shape == (B, T)
    assert out.cas.shape == (B, T, C)
    assert out.video_scores.shape == (B, C)
    assert bool(((out.video_scores >= 0) & (out.video_scores <= 1)).all())
    loss, parts = model.loss(out, _labels([0, 3]), step=0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert parts and all(torch.isfinite(value) and not value.requires_grad for value in parts.values())


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_on_a_fixed_batch(name):
    model = _build(name)
    features, labels = _batch(4, seed=1), _labels([0, 0, 2, 4])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(model.loss(model(features), labels, 0)[0])
        model.train()
        return value

    before = eval_loss()
    for step in range(15):
        loss, _ = model.loss(model(features), labels, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < before


@pytest.mark.parametrize("name", NAMES)
def test_ftcl_on_embedding_and_attention_gets_gradients(name):
    from ftcl_plugin import FTCL

    model = _build(name)
    # full weight from the first call (the default ramp gives the first call weight 0: it only measures)
    model.ftcl = FTCL(feature_dim=model.embedding_dim, warmup_steps=0, max_grad_ratio=None)
    labels = _labels([0, 0, 1, 1])
    out = model(_batch(4, seed=2))
    terms = model.ftcl.forward_terms(out.embedding, model.ftcl_attention(out), labels)
    assert int(terms.num_positive_pairs) > 0 and int(terms.num_negative_pairs) > 0
    terms.loss.backward()
    ftcl_grads = [p.grad for p in model.ftcl.parameters()]
    assert ftcl_grads and all(g is not None and torch.isfinite(g).all() for g in ftcl_grads)
    assert any(float(g.abs().sum()) > 0 for g in ftcl_grads)
    # FTCL alone reaches the baseline's own parameters through the gathered embedding.
    own = [p.grad for n, p in model.named_parameters() if not n.startswith("ftcl.")]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in own)


@pytest.mark.parametrize("name", NAMES)
def test_inference_contract_and_eval_determinism(name):
    model = _build(name).eval()
    features = _batch(1, length=23, seed=3)
    with torch.no_grad():
        first, second = model(features), model(features)
    cas, scores, attention = model.inference(first)
    streams = 2 if name == "stpn" else 1  # STPN returns both streams' signals side by side
    assert isinstance(cas, np.ndarray) and cas.shape == (23, streams * C)
    assert scores.shape == (C,) and scores.min() >= 0 and scores.max() <= 1
    assert attention is None or attention.shape in ((23,), (23, streams * C))
    for array in (cas, scores) + (() if attention is None else (attention,)):
        assert np.isfinite(array).all()
    if name == "cola":  # min-max normalised; W-TALC's are logits, STPN's score signal is a raw T-CAM mix
        assert cas.min() >= 0 and cas.max() <= 1 and attention.min() >= 0 and attention.max() <= 1
    shown, shown_attention = model.plot_signals(first)  # what a plot shows: one [0, 1] CAS per class
    assert shown.shape == (23, C) and shown.min() >= 0 and shown.max() <= 1
    assert shown_attention is None or (shown_attention.shape == (23,) and 0 <= shown_attention.min()
                                       and shown_attention.max() <= 1)
    for key in ("embedding", "cas", "video_scores"):
        torch.testing.assert_close(getattr(first, key), getattr(second, key), rtol=0, atol=0)
    with pytest.raises(ValueError, match="B = 2"):
        model.inference(model(_batch(2)))


# Counted by hand from the layer shapes at D = 2048, 20 classes (the upstreams' THUMOS14 sizes):
# CoLA: Conv1d(2048, 2048, k=3) with bias 12_584_960 + Conv1d(2048, 20, k=1) without bias 40_960;
# W-TALC: Linear(2048, 2048) 4_196_352 + Linear(2048, 20) 40_980;
# STPN, per stream (1024-d): Linear(1024, 256) 262_400 + Linear(256, 1) 257 + Linear(1024, 20) 20_500.
@pytest.mark.parametrize(("name", "count"), [("cola", 12_625_920), ("wtalc", 4_237_332), ("stpn", 2 * 283_157)])
def test_parameter_counts_at_thumos14_sizes(name, count):
    model = _build(name, feature_dim=2048, num_classes=20)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("builtin_data", [False, True])
@pytest.mark.parametrize("dataset", ["thumos14", "activitynet"])
@pytest.mark.parametrize("name", NAMES)
def test_configs_resolve_into_model_and_localization(name, dataset, builtin_data):
    from ftcl_plugin.localization import LocalizationConfig
    from integrations.common.config import load_config

    config = load_config(name, dataset, builtin_data=builtin_data)
    LocalizationConfig(**config["localization"])
    assert config["evaluation"]["preset"] == dataset
    assert config["data"].get("builtin", "thumos14-like") == f"{dataset}-like"
    assert config["data"]["train_segments"] >= 1 and config["data"]["test_segments"] >= 1
    assert config["optim"]["batch_size"] >= 2 and config["train"]["epochs"] >= 1
    module = importlib.import_module(f"integrations.{name}.model")
    model = module.build_model(config["model"] | {"_all": config}, num_classes=C, feature_dim=D)
    assert model.name == name


def test_masked_topk_mean_matches_brute_force():
    scores = torch.randn(3, 9, 4, generator=torch.Generator().manual_seed(4))
    lengths = torch.tensor([9, 5, 1])
    k = torch.tensor([3, 5, 1])
    valid = torch.arange(9)[None] < lengths[:, None]
    got = masked_topk_mean(scores, k, valid)
    for b in range(3):
        expected = scores[b, : lengths[b]].topk(int(k[b]), dim=0).values.mean(dim=0)
        torch.testing.assert_close(got[b], expected)


# ---- CoLA -------------------------------------------------------------------------------------------------------


def test_cola_shapes_at_t750_and_non_negative_outputs():
    model = CoLA(32, 20).train()
    out = model(_batch(2, 750, 32))
    assert out.extras["easy_action"].shape == out.extras["easy_background"].shape == (2, 150, 32)
    assert out.extras["hard_action"].shape == out.extras["hard_background"].shape == (2, 37, 32)
    assert out.attention.shape == (2, 750) and out.cas.shape == (2, 750, 20) and out.video_scores.shape == (2, 20)
    assert bool((out.cas >= 0).all()) and bool((out.attention >= 0).all())
    torch.testing.assert_close(out.attention, out.cas.sum(dim=2))


def test_cola_hard_mining_example():
    actionness = torch.zeros(1, 20)
    actionness[0, 5:15] = 1.0
    inner, outer = hard_rings(actionness)
    assert inner[0].nonzero().flatten().tolist() == [6, 7, 13]
    assert outer[0].nonzero().flatten().tolist() == [2, 3, 16]


def test_cola_snico_is_cross_entropy_with_target_zero():
    g = torch.Generator().manual_seed(5)
    query, positive, negatives = (torch.randn(2, k, 8, generator=g) for k in (3, 4, 6))
    q = query.mean(1) / query.mean(1).norm(dim=1, keepdim=True)
    kp = positive.mean(1) / positive.mean(1).norm(dim=1, keepdim=True)
    kn = negatives / negatives.norm(dim=2, keepdim=True)
    logits = torch.cat([(q * kp).sum(1, keepdim=True), (q[:, None] * kn).sum(2)], dim=1) / 0.07
    expected = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    torch.testing.assert_close(snippet_contrast(query, positive, negatives), expected)


def test_cola_loss_is_bce_of_softmax_against_normalised_labels_plus_weighted_snico():
    model = CoLA(D, C, contrast_weight=0.01).eval()
    labels = _labels([1, 2]) + _labels([3, 2])  # second video has two classes
    out = model(_batch())
    loss, parts = model.loss(out, labels, 0)
    target = labels / labels.sum(1, keepdim=True)
    torch.testing.assert_close(parts["action"], F.binary_cross_entropy(out.video_scores, target))
    torch.testing.assert_close(loss, parts["action"] + 0.01 * (parts["contrast_action"] + parts["contrast_background"]))


def test_cola_masked_hard_mining_weights_only_ring_members():
    model = CoLA(D, C, masked_hard_mining=True).eval()
    out = model(_batch())
    weights = out.extras["hard_action_weight"]
    assert weights.shape == (B, max(1, T // 20)) and set(weights.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(model.loss(out, _labels([0, 1]), 0)[0])


# ---- W-TALC -----------------------------------------------------------------------------------------------------


def _positive_features(batch: int, length: int, seed: int) -> torch.Tensor:
    # W-TALC counts non-zero snippets: synthetic features must never contain an all-zero row.
    return _batch(batch, length, D, seed).abs() + 0.1


def test_wtalc_loss_unchanged_by_appended_zero_padding():
    model = WTALC(D, C, casl_pairs="shared").eval()
    features, labels = _positive_features(4, 12, 6), _labels([0, 0, 1, 1])
    padded = torch.cat([features, torch.zeros(4, 7, D)], dim=1)
    ragged = padded.clone()
    ragged[1, 9:] = 0  # one video shorter than the rest
    with torch.no_grad():
        loss, _ = model.loss(model(features), labels, 0)
        loss_padded, _ = model.loss(model(padded), labels, 0)
        loss_lengths, _ = model.loss(model(padded, torch.full((4,), 12)), labels, 0)
        counted = model(ragged).extras["lengths"]
    torch.testing.assert_close(loss_padded, loss)
    torch.testing.assert_close(loss_lengths, loss)
    assert counted.tolist() == [12, 9, 12, 12]


def test_wtalc_casl_is_zero_without_shared_classes_and_keeps_the_graph():
    model = WTALC(D, C)
    out = model(_positive_features(6, 10, 7))
    labels = _labels([0, 1, 2, 3, 4, 0])  # adjacent pairs (0,1), (2,3), (4,5) share nothing
    loss, parts = model.loss(out, labels, 0)
    assert float(parts["casl"]) == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_wtalc_casl_matches_a_per_pair_loop():
    g = torch.Generator().manual_seed(8)
    embedding, logits = torch.rand(4, 6, 5, generator=g), torch.randn(4, 6, 3, generator=g)
    labels = torch.tensor([[1.0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 1, 1]])
    valid = torch.ones(4, 6, dtype=torch.bool)
    pairs = torch.tensor([[0, 1], [2, 3]])
    got = co_activity_loss(embedding, logits, labels, valid, pairs)

    def d(u, v):
        return 1 - F.cosine_similarity(u, v, dim=0, eps=0)

    total, count = 0.0, 0
    for i, j in pairs.tolist():
        for c in range(3):
            if labels[i, c] * labels[j, c] == 0:
                continue
            a_i, a_j = torch.softmax(logits[i, :, c], 0), torch.softmax(logits[j, :, c], 0)
            hi, hj = embedding[i].T @ a_i, embedding[j].T @ a_j
            li, lj = embedding[i].T @ (1 - a_i) / 5, embedding[j].T @ (1 - a_j) / 5
            total += 0.5 * F.relu(d(hi, hj) - d(hi, lj) + 0.5) + 0.5 * F.relu(d(hi, hj) - d(hj, li) + 0.5)
            count += 1
    torch.testing.assert_close(got, total / count)


def test_wtalc_ftcl_attention_masks_padding():
    model = WTALC(D, C).eval()
    out = model(_positive_features(2, 8, 10), torch.tensor([8, 5]))
    attention = model.ftcl_attention(out)
    assert bool((attention[1, 5:] == 0).all()) and bool((attention[:, :5] > 0).all())


# ---- STPN -------------------------------------------------------------------------------------------------------


def test_stpn_stream_shapes_attention_range_and_pooling_identity():
    model = STPN(2 * 32, 20).eval()
    out = model(_batch(2, 750, 64))
    assert out.embedding.shape == (2, 750, 512)
    for stream in ("rgb", "flow"):
        attention, tcam = out.extras[f"{stream}_attention"], out.extras[f"{stream}_tcam"]
        assert attention.shape == (2, 750) and tcam.shape == (2, 750, 20)
        assert out.extras[f"{stream}_logits"].shape == (2, 20)
        assert bool(((attention > 0) & (attention < 1)).all())
        # video logit = sum_t lambda_t a_t + b3 under sum pooling (the default)
        bias = getattr(model, stream).classifier.bias
        expected = (attention[..., None] * tcam).sum(dim=1) + bias
        torch.testing.assert_close(out.extras[f"{stream}_logits"], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.attention, (out.extras["rgb_attention"] + out.extras["flow_attention"]) / 2)


def test_stpn_loss_is_bce_plus_beta_l1_per_stream():
    model = STPN(D, C, hidden_dim=8, sparsity_weight=1e-4).eval()
    labels = _labels([0, 4])
    out = model(_batch())
    loss, parts = model.loss(out, labels, 0)
    expected = 0.0
    for stream in ("rgb", "flow"):
        attention = out.extras[f"{stream}_attention"]
        torch.testing.assert_close(parts[f"{stream}_sparsity"], attention.sum(dim=1).mean())
        probabilities = torch.sigmoid(out.extras[f"{stream}_logits"])
        expected = expected + F.binary_cross_entropy(probabilities, labels) + 1e-4 * attention.sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)


def test_stpn_ftcl_gradient_reaches_both_attention_hidden_layers():
    from ftcl_plugin import FTCL

    model = STPN(D, C, hidden_dim=16)
    model.ftcl = FTCL(feature_dim=model.embedding_dim, warmup_steps=0, max_grad_ratio=None)
    out = model(_batch(4, seed=11))
    model.ftcl(out.embedding, model.ftcl_attention(out), _labels([0, 0, 1, 1])).backward()
    for stream in (model.rgb, model.flow):
        assert float(stream.hidden.weight.grad.abs().sum()) > 0
        assert stream.classifier.weight.grad is None  # FTCL does not see the classifier


# ---- runner smoke runs ------------------------------------------------------------------------------------------

# Tiny runs (tests/tiny_runs.py) through integrations/<name>/train.py's entry point.
TINY = [*TINY_RUN, "--set", "optim.lr=1e-3"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("tiny-baselines"))


@pytest.mark.parametrize("ftcl", ["--ftcl", "--no-ftcl"])
@pytest.mark.parametrize("name", NAMES)
def test_train_script_smoke_run(tiny_data, tmp_path, name, ftcl):
    import csv
    import json

    from integrations.common.runner import main

    out = tmp_path / "run"
    assert main(name, ["--data", str(tiny_data), "--iterations", "3", "--out", str(out), ftcl, *TINY]) == 0
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(np.isfinite(float(row["loss"])) for row in rows)
    assert ("ftcl_loss" in rows[0]) == (ftcl == "--ftcl")
    table = json.loads((out / "table.json").read_text())
    assert set(table["rows"][0]["summary"]) >= {"0.1", "0.5", "0.7"}
    assert json.loads((out / "config.json").read_text())["meta"]["baseline"] == name


@pytest.mark.parametrize("name", NAMES)
def test_train_script_entry_point(name, capsys, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", [f"integrations/{name}/train.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "integrations" / name / "train.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert f"integrations/{name}/train.py" in capsys.readouterr().out


# W-TALC's batches draw videos with replacement, so a video can be read twice in one epoch, and each read's crop is
# seeded by how often the video was read before in the epoch: the runner counts the reads of the batches a resumed
# epoch skips (``skip_reads``), so the repeated video gets the crop of the uninterrupted run.
@pytest.mark.parametrize("name", NAMES)
def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path, name):
    from integrations.common.runner import main

    # Each baseline draws its own randomness (CoLA's easy-mining mask, dropout, the class-pair sampler):
    # stopping after 2 steps and resuming must give the same weights as 4 uninterrupted steps.
    common = ["--data", str(tiny_data), "--epochs", "2", *TINY]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(name, [*common, "--out", str(straight)]) == 0
    assert main(name, [*common, "--iterations", "2", "--out", str(split)]) == 0
    assert main(name, [*common, "--resume", "--out", str(split)]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] > 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
