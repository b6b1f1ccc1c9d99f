"""FTCL under the README's two lines, in hosts it was not written for: is it safe, alive and observable?

Trains each host from scratch for ``--steps`` steps on the built-in thumos14-like **synthetic** data, once without
FTCL and once with exactly the README's two lines and all defaults::

    model.ftcl = FTCL(feature_dim=E)                                   # before the optimizer
    loss = loss + model.ftcl(embedding, attention, labels)             # every step

Both arms start from the same initial weights and see the same batches and dropout masks. Printed per host:

- ``ratio``: ||d FTCL / d embedding|| / ||d host loss / d embedding||, FTCL as the two lines weight it (with its
  own schedule), as FTCL itself reports it in ``last_terms.grad_ratio`` (``tests/test_facade_safety.py`` checks
  that number against plain autograd): at step 1 (goal <= 1: FTCL never dominates early), its median and maximum
  over steps 2-100 (the ratio swings with every batch, and is unbounded on a batch that gives the host no gradient;
  FTCL caps its running mean), at the last step (goal >= 0.01: FTCL is still alive) and its median over the last
  10 steps;
- the host's own loss, mean over the last 10 steps, without and with FTCL (goal: with <= 1.5 x without + 0.02);
- FTCL's term activity from ``ftcl.last_terms``, averaged over the last 10 steps.

Hosts: two WSAL models written here for this check only (``conv-attention``: conv + ReLU embedding, a sigmoid
actionness head and its own MIL + attention-pooling loss; ``magnitude``: no attention branch, the embedding's
feature magnitude is the actionness, with a magnitude-separation loss), and the embeddings of the four clean-room
baselines under ``integrations/`` with their own losses and built-in configs.

Usage::

    python benchmarks/bench_host.py                       # all hosts, 120 steps, seed 0
    python benchmarks/bench_host.py --hosts conv-attention,acmnet --steps 200 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftcl_plugin import FTCL, FSDLoss, LCSLoss  # noqa: E402
from ftcl_plugin.data import builtin, collate_videos, open_dataset  # noqa: E402

LOCAL_HOSTS = ("conv-attention", "magnitude")
BASELINES = ("acmnet", "cola", "wtalc", "stpn")


def _topk_mean(scores: Tensor, k: int) -> Tensor:
    return scores.topk(max(1, min(k, scores.shape[1])), dim=1).values.mean(dim=1)


def _mil_cross_entropy(cas: Tensor, labels: Tensor) -> Tensor:
    """Top-(T/8) MIL pooling, softmax over classes, cross-entropy against the normalised labels."""
    log_scores = torch.log_softmax(_topk_mean(cas, cas.shape[1] // 8), dim=-1)
    target = labels / labels.sum(dim=1, keepdim=True).clamp_min(1)
    return -(target * log_scores).sum(dim=1).mean()


class ConvAttentionHost(nn.Module):
    """A small WSAL host: conv + ReLU embedding, sigmoid actionness, MIL CE + attention-pooled BCE + sparsity."""

    def __init__(self, feature_dim: int, num_classes: int, embedding_dim: int = 512) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.embed = nn.Conv1d(feature_dim, embedding_dim, kernel_size=3, padding=1)
        self.actionness = nn.Conv1d(embedding_dim, 1, kernel_size=1)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        embedding = F.relu(self.embed(features.transpose(1, 2)))                  # (B, E, T)
        attention = torch.sigmoid(self.actionness(embedding)).squeeze(1)         # (B, T)
        embedding = embedding.transpose(1, 2)                                   # (B, T, E)
        cas = self.classifier(self.dropout(embedding))                          # (B, T, C)
        return {"embedding": embedding, "attention": attention, "cas": cas}

    def loss(self, out: dict[str, Tensor], labels: Tensor) -> Tensor:
        attention = out["attention"]
        pooled = (out["cas"] * attention[..., None]).sum(1) / attention.sum(1, keepdim=True).clamp_min(1e-6)
        bce = F.binary_cross_entropy_with_logits(pooled, labels)
        return _mil_cross_entropy(out["cas"], labels) + bce + 1e-3 * attention.mean()


class MagnitudeHost(nn.Module):
    """A host without an attention branch: feature magnitude is the actionness (two conv layers, MIL CE + margin)."""

    def __init__(self, feature_dim: int, num_classes: int, embedding_dim: int = 256) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.conv1 = nn.Conv1d(feature_dim, embedding_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(embedding_dim, embedding_dim, kernel_size=3, padding=1)
        self.classifier = nn.Conv1d(embedding_dim, num_classes, kernel_size=1)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        hidden = F.relu(self.conv1(features.transpose(1, 2)))
        embedding = F.relu(self.conv2(hidden))                                   # (B, E, T)
        cas = self.classifier(embedding).transpose(1, 2)                        # (B, T, C)
        embedding = embedding.transpose(1, 2)
        return {"embedding": embedding, "attention": embedding.norm(dim=-1), "cas": cas}

    def loss(self, out: dict[str, Tensor], labels: Tensor) -> Tensor:
        magnitude = out["attention"]
        k = max(1, magnitude.shape[1] // 8)
        high = magnitude.topk(k, dim=1).values.mean(1)
        low = (-magnitude).topk(k, dim=1).values.neg().mean(1)
        separation = F.relu(10.0 - high + low).mean() / 10.0
        return _mil_cross_entropy(out["cas"], labels) + separation


@dataclass
class Host:
    """A host under test: how to build it, run it and read its embedding, attention and own loss."""

    name: str
    build: Callable[[], nn.Module]
    run: Callable[[nn.Module, Tensor, Tensor, int], tuple[Tensor, Tensor, Tensor]]
    lr: float
    weight_decay: float = 0.0
    batch_size: int = 16
    sampler: str = "random"
    extra: dict[str, Any] = field(default_factory=dict)


def _local_host(name: str, feature_dim: int, num_classes: int) -> Host:
    cls = ConvAttentionHost if name == "conv-attention" else MagnitudeHost

    def run(model: nn.Module, features: Tensor, labels: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
        out = model(features)
        return out["embedding"], out["attention"], model.loss(out, labels)

    return Host(name, lambda: cls(feature_dim, num_classes), run, lr=1e-3, weight_decay=5e-4)


def _baseline_host(name: str, feature_dim: int, num_classes: int) -> Host:
    from integrations.common.config import load_config

    config = load_config(name, "thumos14", builtin_data=True)
    module = __import__(f"integrations.{name}.model", fromlist=["build_model"])

    def build() -> nn.Module:
        return module.build_model(config.get("model", {}) | {"_all": config}, num_classes=num_classes,
                                  feature_dim=feature_dim)

    def run(model: nn.Module, features: Tensor, labels: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
        output = model(features * float(config["data"].get("input_scale", 1.0)))
        loss, _ = model.loss(output, labels, step)
        return output.embedding, model.ftcl_attention(output), loss

    optim = config["optim"]
    return Host(name, build, run, lr=float(optim["lr"]), weight_decay=float(optim.get("weight_decay", 0.0)),
                batch_size=int(optim["batch_size"]), sampler=config["data"].get("sampler", "random"))


def _batches(labels: Tensor, host: Host, seed: int) -> Iterator[list[int]]:
    from ftcl_plugin.data import ClassPairSampler

    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if host.sampler == "class_pair":
            yield from (list(map(int, b)) for b in ClassPairSampler(labels, host.batch_size, generator=generator))
        else:
            order = torch.randperm(labels.shape[0], generator=generator).tolist()
            yield from (order[i:i + host.batch_size] for i in range(0, len(order), host.batch_size))
        epoch += 1


def _norm(value: Tensor | None) -> float:
    return 0.0 if value is None else float(value.norm())


def make_ftcl(dim: int, recipe: str) -> FTCL:
    """The README's first line (``recipe="default"``), or the paper's exact equations for comparison."""
    if recipe == "paper-exact":
        return FTCL(dim, warmup_steps=0, max_grad_ratio=None, fsd_loss=FSDLoss(dim), lcs_loss=LCSLoss())
    return FTCL(feature_dim=dim)


def train_arm(host: Host, split: Any, *, ftcl: bool, steps: int, seed: int, recipe: str = "default") -> dict[str, Any]:
    """One arm: ``steps`` Adam steps of the host, with or without the README's two lines."""
    torch.manual_seed(seed)
    model = host.build()
    if ftcl:
        model.ftcl = make_ftcl(model.embedding_dim, recipe)            # the README's first line
    # The training stream is re-seeded after every parameter exists, so both arms share dropout masks.
    torch.manual_seed(seed * 7919 + 17)
    optimizer = torch.optim.Adam(model.parameters(), lr=host.lr, weight_decay=host.weight_decay)
    model.train()
    batches = _batches(split.labels, host, seed)
    host_losses, terms = [], []
    for step in range(1, steps + 1):
        batch = collate_videos([split[i] for i in next(batches)])
        embedding, attention, host_loss = host.run(model, batch.features, batch.labels, step - 1)
        loss = host_loss
        if ftcl:
            loss = loss + model.ftcl(embedding, attention, batch.labels)     # the README's second line
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        host_losses.append(float(host_loss.detach()))
        if ftcl:  # read after backward: the pass fills in FTCL's gradient share on the embedding
            terms.append(model.ftcl.last_terms)
    return {"host_losses": host_losses, "terms": terms}


def _mean_field(records: list[Any], name: str) -> float:
    values = [float(getattr(r, name)) for r in records if hasattr(r, name)]
    return statistics.fmean(values) if values else math.nan


def _fmt(value: float, digits: int = 3) -> str:
    if value != value:
        return "n/a"
    if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default=",".join(LOCAL_HOSTS + BASELINES))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--recipe", choices=["default", "paper-exact"], default="default",
                        help="FTCL as the two lines give it, or the paper's exact equations (no warm-up, no cap, "
                             "raw FSD sums at temperature 0.2, the fixed LCS threshold 0.92)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = builtin("thumos14-like")
    split = open_dataset(root, "train", layout="acmnet", num_segments=256, sampling="random", seed=0)
    feature_dim, num_classes = int(split[0].features.shape[-1]), int(split[0].label.shape[0])
    started = time.perf_counter()
    print(f"Data: builtin:thumos14-like (SYNTHETIC), train split, T <= 256, D = {feature_dim}; {args.steps} steps "
          f"from scratch per arm; FTCL recipe: {args.recipe}; seeds {args.seeds}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} CPU.\n")
    header = ["host", "seed", "ratio @1 (<= 1)", "median ratio @2-100", "max ratio @2-100",
              f"ratio @{args.steps} (>= 0.01)", f"median ratio @{args.steps - 9}-{args.steps}", "host loss w/o FTCL",
              "host loss with FTCL",
              "loss goal met", "weight", "FSD active", "LCS active", "LCS threshold", "pos / neg pairs"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.hosts.split(","):
        host = _local_host(name, feature_dim, num_classes) if name in LOCAL_HOSTS else \
            _baseline_host(name, feature_dim, num_classes)
        for seed in args.seeds:
            plain = train_arm(host, split, ftcl=False, steps=args.steps, seed=seed)
            added = train_arm(host, split, ftcl=True, steps=args.steps, seed=seed, recipe=args.recipe)
            without = statistics.fmean(plain["host_losses"][-10:])
            with_ftcl = statistics.fmean(added["host_losses"][-10:])
            ratios = [float(t.grad_ratio) for t in added["terms"]]
            last = added["terms"][-10:]
            row = [name, seed, _fmt(ratios[0]), _fmt(statistics.median(ratios[1:100])), _fmt(max(ratios[1:100])),
                   _fmt(ratios[-1]), _fmt(statistics.median(ratios[-10:])), _fmt(without), _fmt(with_ftcl),
                   "yes" if with_ftcl <= 1.5 * without + 0.02 else "NO", _fmt(_mean_field(last, "weight"), 2),
                   _fmt(_mean_field(last, "fsd_active_fraction"), 2), _fmt(_mean_field(last, "lcs_active_fraction"), 2),
                   _fmt(_mean_field(last, "lcs_threshold"), 3),
                   f"{_fmt(_mean_field(last, 'num_positive_pairs'), 1)} / {_fmt(_mean_field(last, 'num_negative_pairs'), 1)}"]
            print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
