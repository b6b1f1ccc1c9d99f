"""Value checks: always on CPU tensors, elsewhere only with ``validate_args=True``; no host read otherwise.

Every bad value below used to be accepted silently with the default arguments (labels of 0.95 made every pair
positive, a length of 0 gave NaN, a NaN attention picked a NaN snippet as the top action) or surfaced as a raw
``IndexError``; each is now a ``ValueError`` whose message names the argument. The "meta" device stands in
for a GPU: it has shapes but no values, so any host read of a value raises there, which makes "no value read
without validate_args" testable on a CPU-only machine.
"""

from __future__ import annotations

import math

import pytest
import torch

from ftcl_plugin import (
    FTCL,
    ActionSelector,
    BackgroundSelector,
    FSDLoss,
    LCSLoss,
    PairMiner,
    ProposalSelector,
)
from ftcl_plugin._checks import check_labels, check_number, check_snippet_batch
from ftcl_plugin.functional import fsd_alignment, fsd_similarity, lcs_length, lcs_path
from ftcl_plugin.selectors import select_all

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
SELECTORS = [ActionSelector(3), BackgroundSelector(3), BackgroundSelector(3, rule="next"), ProposalSelector(3)]


def _batch(generator, batch=4, snippets=10, dim=6):
    return torch.randn(batch, snippets, dim, generator=generator), torch.rand(batch, snippets, generator=generator)


# ------------------------------------------------------------------------------------------------
# labels and pair labels
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,shown", [(0.95, "0.95"), (0.05, "0.05"), (0.5, "0.5"), (2.0, "2"), (-1.0, "-1"),
                                       (math.nan, "nan")])
def test_labels_that_are_not_zero_or_one_are_refused_on_cpu_by_default(bad, shown):
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels[1, 0] = bad
    message = rf"`labels` must be multi-hot \(every entry 0 or 1\), but got {shown}; binarise .* `labels > 0.5`"
    with pytest.raises(ValueError, match=message):
        PairMiner()(labels)
    features, attention = torch.randn(3, 12, 8), torch.rand(3, 12)
    with pytest.raises(ValueError, match=message):
        FTCL(8)(features, attention, labels)


def test_label_smoothing_is_refused_and_binarising_works():
    # 0.95 / 0.05 would count every class as present: every pair shared a class and was positive
    smoothed = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.05, 0.95]])
    with pytest.raises(ValueError, match="binarise soft or smoothed labels first"):
        PairMiner(negatives_per_positive=None)(smoothed)
    pairs = PairMiner(negatives_per_positive=None)(smoothed > 0.5)
    assert pairs.is_positive.tolist() == [True, False, False]
    assert PairMiner()(torch.tensor([[1, 0], [1, 0]])).is_positive.tolist() == [True]  # integer 0/1 is fine


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0])
def test_is_positive_must_be_bool_or_zero_one(bad, generator):
    features = torch.randn(2, 3, 8, generator=generator)
    is_positive = torch.tensor([1.0, bad])
    message = r"`is_positive` must be bool or hold only 0 and 1, but got .*; binarise it first"
    with pytest.raises(ValueError, match=message):
        LCSLoss()(features, features, is_positive)
    with pytest.raises(ValueError, match=message):
        FSDLoss(8, projection_dim=4)(features, features, features, features, is_positive)
    assert torch.isfinite(LCSLoss()(features, features, torch.tensor([1.0, 0.0])))


# ------------------------------------------------------------------------------------------------
# lengths
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths,shown", [([4, 0], r"\[0, 4\]"), ([-2, 3], r"\[-2, 3\]"), ([4, 5], r"\[4, 5\]")])
def test_lengths_outside_one_to_l_are_refused_on_cpu_by_default(lengths, shown):
    # before: 0 gave a silent 0 (and 0/0 = NaN in LCSLoss), too large an IndexError from inside _dp.py
    c = torch.rand(2, 4, 4)
    message = rf"`lengths_a` must lie in \[1, 4\], but got values in {shown}"
    for call in (lambda: lcs_length(c, lengths_a=torch.tensor(lengths)),
                 lambda: fsd_similarity(c, c, lengths_a=torch.tensor(lengths)),
                 lambda: fsd_alignment(c, c, lengths_a=torch.tensor(lengths)),
                 lambda: lcs_path(c, lengths_a=torch.tensor(lengths))):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: type(s).__name__)
def test_selectors_refuse_bad_lengths_by_default(selector, generator):
    features, attention = _batch(generator)
    for lengths, shown in (([3, 0, 1, 2], r"\[0, 3\]"), ([3, 11, 1, 2], r"\[1, 11\]")):
        with pytest.raises(ValueError, match=rf"`lengths` must lie in \[1, 10\], but got values in {shown}"):
            selector(features, attention, lengths=torch.tensor(lengths))


# ------------------------------------------------------------------------------------------------
# attention and features
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: type(s).__name__)
def test_nan_attention_is_refused(selector, generator):
    # before: NaN sorts above every score, so the NaN snippet became the top action, even with validate_args
    features, attention = _batch(generator)
    attention[2, 7] = math.nan
    with pytest.raises(ValueError, match=r"`attention` must not be NaN, but is NaN at video 2, snippet 7"):
        selector(features, attention)
    # NaN in the padding of a padded batch is never read
    lengths = torch.tensor([10, 10, 7, 10])
    assert selector(features, attention, lengths=lengths).features.shape[0] == 4


def test_features_passed_as_b_d_t_are_named_transposed(generator):
    # before: "`attention` must have shape (B, T) = (4, 6) ..." although attention was right
    features, attention = _batch(generator)
    message = (r"`features` must have shape \(B, T, D\) with T = 10 as in `attention` \(4, 10\), but got "
               r"\(4, 6, 10\), which looks like \(B, D, T\); pass `features.transpose\(1, 2\)`")
    with pytest.raises(ValueError, match=message):
        ActionSelector(3)(features.transpose(1, 2), attention)
    with pytest.raises(ValueError, match=message):
        FTCL(6)(features.transpose(1, 2), attention, torch.eye(4)[:, :2])


def test_non_finite_features_are_refused_where_a_selector_reads_them(generator):
    features, attention = _batch(generator)
    top = int(attention[1].argmax())
    poisoned = features.clone()
    poisoned[1, top, 3] = math.nan
    for selector in (ActionSelector(3), ProposalSelector(3, threshold=float(attention[1, top]))):
        with pytest.raises(ValueError, match=rf"`features` must be finite where it is read, but video 1, snippet "
                                             rf"{top} holds nan"):
            selector(poisoned, attention)
    with pytest.raises(ValueError, match="must be finite where it is read"):
        select_all([BackgroundSelector(3), ActionSelector(3)], poisoned, attention)
    # a snippet nobody reads may hold anything, unless every snippet is checked on request
    assert torch.isfinite(BackgroundSelector(3)(poisoned, attention).features).all()
    with pytest.raises(ValueError, match=rf"`features` must be finite, but holds nan at index \(1, {top}, 3\)"):
        BackgroundSelector(3, validate_args=True)(poisoned, attention)
    poisoned[1, top, 3] = -math.inf
    with pytest.raises(ValueError, match="holds -inf"):
        ActionSelector(3)(poisoned, attention)


# ------------------------------------------------------------------------------------------------
# numbers: non-finite refused by default
# ------------------------------------------------------------------------------------------------


def test_non_finite_numbers_are_refused_unless_allowed():
    with pytest.raises(ValueError, match=r"`fsd_weight` must be finite, but got inf"):
        FTCL(8, fsd_weight=math.inf)
    with pytest.raises(ValueError, match=r"`threshold` must be finite, but got inf"):
        lcs_length(torch.rand(1, 2, 2), threshold=math.inf)
    with pytest.raises(ValueError, match=r"`x` must be finite, but got -inf"):
        check_number(-math.inf, "x")
    check_number(math.inf, "x", minimum=0.0, allow_infinite=True)
    with pytest.raises(ValueError, match=r"`x` must not be NaN"):
        check_number(math.nan, "x", allow_infinite=True)


# ------------------------------------------------------------------------------------------------
# the rule: values are read on CPU always, elsewhere only on request; the kernels never read them
# ------------------------------------------------------------------------------------------------


def test_off_cpu_values_are_read_only_with_validate_args():
    labels = torch.empty(3, 2, device="meta")
    features, attention = torch.empty(3, 5, 4, device="meta"), torch.empty(3, 5, device="meta")
    lengths = torch.empty(3, dtype=torch.int64, device="meta")
    check_labels(labels, 3, labels, validate_args=False)  # no value read: nothing to raise
    check_snippet_batch(features, attention, lengths, validate_args=False)
    # asked for, the check reads values, which a meta tensor cannot give
    with pytest.raises((NotImplementedError, RuntimeError)):
        check_labels(labels, 3, labels, validate_args=True)


@CUDA
def test_cuda_value_checks_need_validate_args():
    device = torch.device("cuda")
    labels = torch.tensor([[0.95, 0.05], [0.95, 0.05]], device=device)
    assert PairMiner()(labels).index_a.numel() == 1  # unchecked without validate_args (no sync)
    with pytest.raises(ValueError, match="must be multi-hot"):
        PairMiner(validate_args=True)(labels)
    c = torch.rand(2, 4, 4, device=device)
    lcs_length(c, lengths_a=torch.tensor([0, 9], device=device))  # clamped in the kernel, no IndexError
    with pytest.raises(ValueError, match=r"`lengths_a` must lie in \[1, 4\]"):
        lcs_length(c, lengths_a=torch.tensor([0, 9], device=device), validate_args=True)
    features, attention = torch.randn(2, 6, 3, device=device), torch.rand(2, 6, device=device)
    attention[0, 1] = math.nan
    ActionSelector(2)(features, attention)
    with pytest.raises(ValueError, match="`attention` must not be NaN"):
        ActionSelector(2, validate_args=True)(features, attention)
