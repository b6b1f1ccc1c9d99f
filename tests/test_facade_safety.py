"""FTCL under the two lines: its schedule, its gradient-share cap, ``last_terms``, the inactivity warning, host
checkpoints in both directions, exact resume of its own state, and mixed precision."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

from ftcl_plugin import FTCL, FSDLoss, FTCLInactiveWarning, LCSLoss

# Videos 0-2 share the label set {A}; video 3 is {B}: 3 positive and 3 negative pairs, all kept when balanced.
LABELS = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


class Host(nn.Module):
    """A tiny WSAL host: a conv embedding and an attention head; its own loss is a weighted sum."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.attend = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = torch.relu(self.embed(features.transpose(1, 2))).transpose(1, 2)
        return embedding, self.attend(embedding).squeeze(-1)


def _inputs(generator, batch=4, snippets=12, dim=8):
    return torch.rand(batch, snippets, dim, generator=generator), torch.rand(batch, snippets, generator=generator)


def _weights(ftcl: FTCL, calls: int, features, attention) -> list[float]:
    out = []
    for _ in range(calls):
        ftcl(features, attention, LABELS)
        out.append(float(ftcl.last_terms.weight))
    return out


# ------------------------------------------------------------------------------------------------ schedule


def test_ramp_starts_at_zero_and_reaches_one_after_warmup(generator):
    features, attention = _inputs(generator)
    ftcl = FTCL(8, warmup_steps=4, max_grad_ratio=None)
    assert _weights(ftcl, 6, features, attention) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert ftcl.training_calls == 6
    assert _weights(FTCL(8, warmup_steps=0, max_grad_ratio=None), 2, features, attention) == [1.0, 1.0]


def test_eval_and_no_grad_calls_neither_advance_nor_change_the_schedule(generator):
    features, attention = _inputs(generator)
    ftcl = FTCL(8, warmup_steps=4, max_grad_ratio=None)
    _weights(ftcl, 3, features, attention)
    ftcl.eval()
    assert _weights(ftcl, 2, features, attention) == [0.5, 0.5]
    ftcl.train()
    with torch.no_grad():
        assert _weights(ftcl, 2, features, attention) == [0.5, 0.5]
    assert ftcl.training_calls == 3
    assert _weights(ftcl, 1, features, attention) == [0.75]


def test_the_weight_scales_the_returned_loss(generator):
    features, attention = _inputs(generator)
    ramped, full = FTCL(8, warmup_steps=4, max_grad_ratio=None), FTCL(8, warmup_steps=0, max_grad_ratio=None)
    full.load_state_dict(ramped.state_dict())
    full.training_calls = 0
    for _ in range(3):  # the same miner draws on both, so the same pairs
        got, expected = ramped(features, attention, LABELS), full(features, attention, LABELS)
    torch.testing.assert_close(got, 0.5 * expected)


# ------------------------------------------------------------------------------------------------ gradient share


def _host_and_ftcl_step(ftcl: FTCL, features: torch.Tensor, attention: torch.Tensor, host_scale: float):
    features = features.clone().requires_grad_(True)
    host_loss = host_scale * features.sum()
    loss = host_loss + ftcl(features, attention, LABELS)
    loss.backward()
    return features


def _expected_ratio(ftcl: FTCL, features: torch.Tensor, attention: torch.Tensor) -> float:
    """||d FTCL / d x|| / ||d host / d x|| computed with plain autograd on a copy of ``ftcl``."""
    twin = copy.deepcopy(ftcl)
    leaf = features.clone().requires_grad_(True)
    host_grad = torch.autograd.grad(0.01 * leaf.pow(2).sum(), leaf)[0]
    ftcl_grad = torch.autograd.grad(twin(leaf, attention, LABELS), leaf)[0]
    return float(ftcl_grad.double().norm() / host_grad.double().norm())


def test_grad_ratio_is_ftcl_over_host_gradient_on_the_features(generator):
    features, attention = _inputs(generator)
    ftcl = FTCL(8, warmup_steps=0, max_grad_ratio=None)
    expected = _expected_ratio(ftcl, features, attention)
    leaf = features.clone().requires_grad_(True)
    loss = 0.01 * leaf.pow(2).sum() + ftcl(leaf, attention, LABELS)
    assert math.isnan(float(ftcl.last_terms.grad_ratio))  # filled in by the backward pass
    loss.backward()
    assert float(ftcl.last_terms.grad_ratio) == pytest.approx(expected, rel=1e-5)


def test_separate_backward_passes_add_up(generator):
    features, attention = _inputs(generator)
    ftcl = FTCL(8, warmup_steps=0, max_grad_ratio=None)
    expected = _expected_ratio(ftcl, features, attention)
    leaf = features.clone().requires_grad_(True)
    host_loss = 0.01 * leaf.pow(2).sum()
    ftcl_loss = ftcl(leaf, attention, LABELS)
    host_loss.backward()
    ftcl_loss.backward()
    assert float(ftcl.last_terms.grad_ratio) == pytest.approx(expected, rel=1e-5)


def test_cap_keeps_ftcl_within_the_host_gradient(generator):
    # The host's gradient on the features is tiny (0.001 per entry): uncapped, FTCL dominates it.
    features, attention = _inputs(generator)
    torch.manual_seed(0)
    uncapped = FTCL(8, warmup_steps=0, max_grad_ratio=None)
    _host_and_ftcl_step(uncapped, features, attention, 1e-3)
    assert float(uncapped.last_terms.grad_ratio) > 10
    torch.manual_seed(0)
    capped = FTCL(8, warmup_steps=0, max_grad_ratio=0.5)
    ratios = []
    for _ in range(4):
        _host_and_ftcl_step(capped, features, attention, 1e-3)
        ratios.append(float(capped.last_terms.grad_ratio))
    # The first call has no measurement of the host yet; from the second on the weight is capped. FTCL's
    # parameters do not change here, so every later call sits exactly on the cap.
    assert ratios[0] > 10
    assert ratios[1:] == pytest.approx([0.5, 0.5, 0.5], rel=1e-4)
    assert float(capped.last_terms.weight) < 0.05


def test_first_ramped_call_measures_and_contributes_nothing(generator):
    features, attention = _inputs(generator)
    ftcl = FTCL(8)
    leaf = _host_and_ftcl_step(ftcl, features, attention, 1e-5)
    assert float(ftcl.last_terms.weight) == 0.0 and float(ftcl.last_terms.grad_ratio) == 0.0
    torch.testing.assert_close(leaf.grad, torch.full_like(leaf, 1e-5))
    # The second call's ramp is 0.01, but FTCL measured its own gradient on the first call, directly, and the
    # host's in that call's backward pass: the cap (host 1e-5 per entry) binds at once.
    _host_and_ftcl_step(ftcl, features, attention, 1e-5)
    assert float(ftcl.last_terms.weight) < 0.01
    assert float(ftcl.last_terms.grad_ratio) == pytest.approx(0.1, rel=1e-4)  # the default cap


def test_a_host_without_gradient_on_the_features_lifts_the_cap_and_warns(generator):
    # e.g. FTCL given an all_gather copy of the embedding: the host's loss never reads that tensor
    features, attention = _inputs(generator)
    ftcl = FTCL(8, warmup_steps=0, inactive_patience=3)
    with pytest.warns(FTCLInactiveWarning, match=r"your loss sent no gradient to `features` in 3 consecutive"):
        for _ in range(5):
            _host_and_ftcl_step(ftcl, features, attention, 0.0)
            assert float(ftcl.last_terms.weight) == 1.0
    for _ in range(3):  # the host's gradient is back: so is the cap
        _host_and_ftcl_step(ftcl, features, attention, 1e-4)
    assert float(ftcl.last_terms.weight) < 0.1
    assert float(ftcl.last_terms.grad_ratio) == pytest.approx(0.1, rel=1e-3)  # the default cap


# ------------------------------------------------------------------------------------------------ last_terms


def test_last_terms_report_the_call_against_independent_computation(generator):
    features, attention = _inputs(generator)
    features.requires_grad_(True)
    fsd_loss, lcs_loss = FSDLoss(8, length_normalized=True), LCSLoss(min_match_fraction=0.05)
    ftcl = FTCL(8, warmup_steps=0, fsd_loss=fsd_loss, lcs_loss=lcs_loss)
    terms = ftcl.forward_terms(features, attention, LABELS)
    last = ftcl.last_terms
    assert last._fields == terms._fields and all(not value.requires_grad for value in last)
    assert (int(last.num_positive_pairs), int(last.num_negative_pairs)) == (3, 3)
    # recompute the per-pair activity with the losses themselves, on the same selections
    pairs = (torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([1, 2, 3, 2, 3, 3]),
             torch.tensor([True, True, False, True, False, False]))
    top = attention.topk(5, dim=1).indices.sort(dim=1).values
    bottom = attention.topk(5, dim=1, largest=False).indices.sort(dim=1).values
    every = attention.topk(12, dim=1).indices.sort(dim=1).values
    gather = lambda index: features.gather(1, index[..., None].expand(-1, -1, 8))  # noqa: E731
    fsd_terms = fsd_loss.forward_videos(gather(top), gather(bottom), *pairs)
    lcs_terms = lcs_loss.forward_videos(gather(every), *pairs)
    positive = pairs[2]
    margins = torch.stack([fsd_terms.action_background - fsd_terms.action_action,
                           fsd_terms.background_action - fsd_terms.action_action]) / 0.2
    fsd_active = (torch.sigmoid(margins).amax(0)[positive] >= 0.01).double().mean()
    lcs_active = (lcs_terms.length[positive] > 0).double().mean()
    torch.testing.assert_close(last.fsd, fsd_terms.loss.detach())
    torch.testing.assert_close(last.lcs, lcs_terms.loss.detach())
    torch.testing.assert_close(last.fsd_active_fraction, fsd_active)
    torch.testing.assert_close(last.lcs_active_fraction, lcs_active)
    torch.testing.assert_close(last.lcs_threshold, lcs_terms.threshold.double())
    assert float(last.weight) == 1.0


def _orthogonal_videos() -> torch.Tensor:
    """Four videos of 12 one-hot snippets, no two snippets alike: every cross-video cosine is 0."""
    return torch.eye(48).view(4, 12, 48)


def test_lcs_activity_counts_positive_pairs_with_a_match(generator):
    # Orthogonal snippets: with the fixed paper threshold nothing ever matches.
    features = _orthogonal_videos()
    attention = torch.rand(4, 12, generator=generator)
    fixed = FTCL(48, warmup_steps=0, lcs_loss=LCSLoss())
    fixed(features, attention, LABELS)
    assert float(fixed.last_terms.lcs_active_fraction) == 0.0
    assert float(fixed.last_terms.lcs_threshold) == pytest.approx(0.92)
    # Identical videos: every positive pair matches along the whole diagonal.
    same = FTCL(12, warmup_steps=0)
    same(torch.eye(12).repeat(4, 1, 1), attention, LABELS)
    assert float(same.last_terms.lcs_active_fraction) == 1.0


# ------------------------------------------------------------------------------------------------ warnings


def test_inactive_lcs_warns_once(generator):
    features = _orthogonal_videos()
    attention = torch.rand(4, 12, generator=generator)
    ftcl = FTCL(48, fsd_weight=0, warmup_steps=0, lcs_loss=LCSLoss(), inactive_patience=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):
            ftcl(features, attention, LABELS)
    messages = [str(w.message) for w in caught if issubclass(w.category, FTCLInactiveWarning)]
    assert len(messages) == 1
    assert "LCS term has been inactive for 3 consecutive training steps" in messages[0]
    assert "min_match_fraction" in messages[0]


def test_no_warning_in_eval_or_when_active(generator):
    features = _orthogonal_videos()
    attention = torch.rand(4, 12, generator=generator)
    ftcl = FTCL(48, fsd_weight=0, lcs_loss=LCSLoss(), inactive_patience=2).eval()
    alive = FTCL(48, fsd_weight=0, inactive_patience=2, lcs_loss=LCSLoss(threshold=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FTCLInactiveWarning)
        for _ in range(5):
            ftcl(features, attention, LABELS)
            alive(features + 1.0, attention, LABELS)  # all cosines positive: every pair matches


def test_short_videos_warn_once_that_proposals_overlap(generator):
    features, attention = _inputs(generator, snippets=7)
    ftcl = FTCL(8)
    with pytest.warns(UserWarning, match=r"T = 7 snippets are shorter than the FSD action and background"):
        ftcl(features, attention, LABELS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ftcl(features, attention, LABELS)


# ------------------------------------------------------------------------------------------------ checkpoints


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_host_checkpoint_with_ftcl_loads_into_the_plain_host_strictly():
    torch.manual_seed(0)
    host = Host()
    host.ftcl = FTCL(8)
    state = _roundtrip(host.state_dict())
    assert not any(key.startswith("ftcl.") for key in state)
    plain = Host()
    plain.load_state_dict(state, strict=True)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, host.state_dict()[name])


def test_plain_host_checkpoint_loads_into_host_with_ftcl_strictly():
    torch.manual_seed(0)
    plain = Host()
    host = Host()
    host.ftcl = FTCL(8)
    before = {name: value.clone() for name, value in host.ftcl.state_dict().items() if name != "_extra_state"}
    result = host.load_state_dict(_roundtrip(plain.state_dict()), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(host.embed.weight, plain.embed.weight)
    for name, value in host.ftcl.state_dict().items():  # FTCL's own state is left as it was
        if name != "_extra_state":
            torch.testing.assert_close(value, before[name])


def test_ftcl_keys_that_are_present_still_load_and_missing_ones_are_reported():
    torch.manual_seed(0)
    source = FTCL(8)
    host = Host()
    host.ftcl = FTCL(8)
    state = host.state_dict() | {f"ftcl.{key}": value for key, value in source.state_dict().items()}
    host.load_state_dict(state, strict=True)
    torch.testing.assert_close(host.ftcl.fsd_loss.match_projection.weight, source.fsd_loss.match_projection.weight)
    partial = {key: value for key, value in state.items() if "insert_projection" not in key}
    with pytest.raises(RuntimeError, match="ftcl.fsd_loss.insert_projection.weight"):
        host.load_state_dict(partial, strict=True)


def test_parameters_still_reach_the_optimizer():
    host = Host()
    host.ftcl = FTCL(8)
    assert {id(p) for p in host.ftcl.parameters()} <= {id(p) for p in host.parameters()}


def test_exact_resume_of_ftcl_state(generator):
    features, attention = _inputs(generator)

    def steps(ftcl: FTCL, count: int) -> list[torch.Tensor]:
        out = []
        for _ in range(count):
            _host_and_ftcl_step(ftcl, features, attention, 1e-2)
            out.append(torch.stack([t.double() for t in ftcl.last_terms[:3]] + [ftcl.last_terms.weight]))
        return out

    torch.manual_seed(0)
    first = FTCL(8, warmup_steps=5)
    steps(first, 3)
    saved = _roundtrip(first.state_dict())
    expected = steps(first, 3)
    torch.manual_seed(1)  # different projections and a fresh miner generator before loading
    resumed = FTCL(8, warmup_steps=5)
    resumed.load_state_dict(saved)
    assert resumed.training_calls == 3
    got = steps(resumed, 3)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------ precision


def test_bfloat16_autocast_forward_and_backward_are_finite(generator):
    torch.manual_seed(0)
    host = Host(16)
    host.ftcl = FTCL(16, warmup_steps=0)
    features = torch.rand(4, 12, 16, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embedding, attention = host(features)
        assert embedding.dtype == torch.bfloat16
        loss = embedding.float().mean() + host.ftcl(embedding, attention, LABELS)
    loss.backward()
    assert bool(torch.isfinite(loss))
    # the attention head gets no gradient here: FTCL only ranks by the attention, and this host loss ignores it
    grads = [p.grad for name, p in host.named_parameters() if not name.startswith("attend")]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    # The cosines and the DP run with autocast off: on the same (bfloat16) embedding cast to float32 outside
    # autocast, FTCL gives the same LCS term and batch threshold bit for bit; the FSD projections themselves run
    # in bfloat16 under autocast, so that term agrees to bfloat16 precision (8 bits of mantissa).
    reference = FTCL(16, warmup_steps=0)
    reference.load_state_dict(host.ftcl.state_dict())
    plain = reference.forward_terms(embedding.detach().float(), attention.detach().float(), LABELS)
    under_autocast = host.ftcl.last_terms
    assert under_autocast.lcs.item() == plain.lcs.item()
    assert under_autocast.lcs_threshold.item() == plain.lcs_threshold.item()
    assert under_autocast.fsd.item() == pytest.approx(plain.fsd.item(), rel=2 ** -8)


def test_features_dtype_other_than_the_parameters_is_cast(generator):
    features, attention = _inputs(generator)
    ftcl = FTCL(8, warmup_steps=0)  # float32 projections
    single = ftcl.forward_terms(features, attention, LABELS)
    # float64 features: cast to float32 for the projections, so the FSD term is the float32 one bit for bit (the
    # float32 values round-trip through float64); the LCS, which has no parameters, keeps float64.
    double = ftcl.forward_terms(features.double().requires_grad_(True), attention.double(), LABELS)
    assert double.fsd.dtype == torch.float32 and double.fsd.item() == single.fsd.item()
    assert double.lcs.dtype == torch.float64 and double.lcs.item() == pytest.approx(single.lcs.item(), rel=1e-6)
    # float16 features: the same numbers as the caller's own cast to float32 (which holds every float16 exactly)
    half = ftcl.forward_terms(features.half(), attention.half(), LABELS)
    cast = ftcl.forward_terms(features.half().float(), attention.half().float(), LABELS)
    assert half.loss.dtype == torch.float32 and half.loss.item() == cast.loss.item()


def test_grad_ratio_sees_the_host_through_the_tensor_a_view_comes_from(generator):
    # The usual host: a (B, D, T) conv output that its own loss reads, handed to FTCL as a (B, T, D) view.
    base_leaf = torch.rand(4, 8, 12, generator=generator, dtype=torch.float64, requires_grad=True)
    attention = torch.rand(4, 12, generator=generator, dtype=torch.float64)
    ftcl = FTCL(8, warmup_steps=0, max_grad_ratio=None).double()
    twin = copy.deepcopy(ftcl)
    conv_output = base_leaf * 1.0
    host_loss = 0.01 * conv_output.pow(2).sum()          # reads the (B, D, T) tensor, never the view
    loss = host_loss + ftcl(conv_output.transpose(1, 2), attention, LABELS)
    loss.backward()
    # independent: the two gradients on the (B, D, T) tensor by plain autograd
    again = base_leaf * 1.0
    host_grad = torch.autograd.grad(0.01 * again.pow(2).sum(), again)[0]
    ftcl_grad = torch.autograd.grad(twin(again.transpose(1, 2), attention, LABELS), again)[0]
    assert float(ftcl.last_terms.grad_ratio) == pytest.approx(float(ftcl_grad.norm() / host_grad.norm()), rel=1e-6)
    # and FTCL's gradient itself is unchanged by the probe
    torch.testing.assert_close(base_leaf.grad, host_grad + ftcl_grad)
