"""Time FTCL's forward + backward at the paper's sizes beside an ACM-Net-sized backbone step; print a Markdown table.

    python benchmarks/bench_ftcl_step.py                          # 16 videos, T=750, D=2048, float32, CPU
    python benchmarks/bench_ftcl_step.py --batch 4 --length 200 --repeats 3   # a quick look

FTCL runs with its defaults (FSD on 5 + 5 proposal snippets, LCS on the top-30 snippets, pairs mined in the batch)
for both variants, on random features and attention, with each video's one class drawn from 12 of the 20
(``benchmarks/_labels.py``, shared with ``bench_train_step.py``). The backbone step is forward + loss + backward
of ``integrations/acmnet/model.py``'s ACM-Net when it imports, else a stand-in of the same shapes
(Conv1d(D, D, 3) + ReLU, the 3-way attention and the C+1 classifier). The target is FTCL <= 2% of the backbone
step (docs/losses.md, "Speed"). The arms are interleaved repeat by repeat so that a shared machine's drift hits
all of them alike; medians.
Not a test.
"""

from __future__ import annotations

import os

# Spinning OpenMP workers distort timings on a shared 2-core machine; must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from benchmarks._labels import one_class_labels  # noqa: E402
from ftcl_plugin import FTCL  # noqa: E402

VARIANTS = ("paper", "official")


class StandInBackbone(nn.Module):
    """ACM-Net's THUMOS14 shapes (ispc-lab/ACM-Net@4d38dc6 ``model/ACMNet.py``) without its losses: embedding,
    3-way attention, classifier.

    Args:
        dim: D (the embedding keeps it).
        classes: C (the classifier has C + 1 outputs).
    """

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(dim, dim, 3, padding=1)
        self.attention = nn.Conv1d(dim, 3, 1)
        self.classifier = nn.Linear(dim, classes + 1)

    def forward(self, features: Tensor) -> Tensor:
        """A scalar standing in for the loss: top-k pooled, attention-weighted CAS.

        Args:
            features: (B, T, D).

        Returns:
            A scalar.
        """
        embedding = torch.relu(self.embed(features.transpose(1, 2))).transpose(1, 2)
        attention = self.attention(embedding.transpose(1, 2)).softmax(dim=1).transpose(1, 2)
        cas = self.classifier(nn.functional.dropout(embedding, 0.7, training=True))
        pooled = (cas * attention[:, :, :1]).topk(max(1, features.shape[1] // 8), dim=1).values.mean(dim=1)
        return pooled.logsumexp(dim=1).mean()


def backbone_step(batch: int, length: int, dim: int, classes: int,
                  generator: torch.Generator) -> tuple[str, Callable[[], None]]:
    """One forward + loss + backward of the ACM-Net baseline (or the stand-in).

    Args:
        batch: B.
        length: T.
        dim: D.
        classes: C.
        generator: source of the random inputs.

    Returns:
        The backbone's name and a closure that runs one step.
    """
    features = torch.randn(batch, length, dim, generator=generator)
    labels = one_class_labels(batch, classes, generator)
    lengths = torch.full((batch,), length, dtype=torch.int64)
    torch.manual_seed(0)
    try:
        from integrations.acmnet.model import build_model
        from integrations.common.config import load_config

        config = load_config("acmnet", "thumos14", builtin_data=False)
        model = build_model(config.get("model", {}), num_classes=classes, feature_dim=dim).train()

        def step() -> None:
            output = model(features, lengths)
            loss, _ = model.loss(output, labels, 0)
            model.zero_grad(set_to_none=True)
            loss.backward()

        return "ACM-Net (integrations/acmnet)", step
    except (ImportError, FileNotFoundError, KeyError, TypeError) as error:
        print(f"ACM-Net unavailable ({error}); timing the stand-in backbone", file=sys.stderr)
    standin = StandInBackbone(dim, classes).train()

    def standin_step() -> None:
        loss = standin(features)
        standin.zero_grad(set_to_none=True)
        loss.backward()

    return "stand-in (Conv1d k3 + ReLU, attention, classifier)", standin_step


def ftcl_step(ftcl_class: type[FTCL], variant: str, batch: int, length: int, dim: int, classes: int,
              generator: torch.Generator) -> tuple[Callable[[], None], tuple[int, int]]:
    """One FTCL forward + backward into (B, T, D) features and the FSD projections.

    Args:
        ftcl_class: the FTCL class to time (lets a script compare two versions side by side).
        variant: ``"paper"`` or ``"official"``.
        batch: B.
        length: T.
        dim: D.
        classes: C.
        generator: source of the random inputs.

    Returns:
        A closure that runs one step, and the (positive, negative) pair counts of the batch.
    """
    features = torch.randn(batch, length, dim, generator=generator).requires_grad_(True)
    attention = torch.rand(batch, length, generator=generator)
    labels = one_class_labels(batch, classes, generator)
    torch.manual_seed(0)
    ftcl = ftcl_class(dim, variant=variant)

    def step() -> None:
        features.grad = None
        ftcl.zero_grad(set_to_none=True)
        ftcl(features, attention, labels).backward()

    terms = ftcl.forward_terms(features, attention, labels)
    return step, (int(terms.num_positive_pairs), int(terms.num_negative_pairs))


def gradient_add_step(batch: int, length: int, dim: int, generator: torch.Generator) -> Callable[[], None]:
    """The one cost FTCL adds outside its own backward in a real step: summing its (B, T, D) gradient into the
    embedding's (autograd adds it in place into the gradient the backbone's heads produced).

    Args:
        batch: B.
        length: T.
        dim: D.
        generator: source of the random inputs.

    Returns:
        A closure that runs one in-place (B, T, D) addition.
    """
    buffer = torch.randn(batch, length, dim, generator=generator)
    gradient = torch.randn(batch, length, dim, generator=generator)

    def step() -> None:
        buffer.add_(gradient)

    return step


def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each step, running the steps in turn within every repeat.

    Args:
        steps: name -> closure.
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        name -> median seconds.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Args:
        argv: the arguments.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=750)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-backbone", action="store_true", help="time FTCL only")
    args = parser.parse_args(argv)
    sizes = dict(batch=args.batch, length=args.length, dim=args.dim, classes=args.classes)
    steps: dict[str, Callable[[], None]] = {}
    pairs = {}
    for variant in VARIANTS:
        steps[f"FTCL {variant}"], pairs[variant] = ftcl_step(FTCL, variant, generator=torch.Generator().manual_seed(0),
                                                             **sizes)
    steps["gradient add"] = gradient_add_step(args.batch, args.length, args.dim, torch.Generator().manual_seed(0))
    backbone = None
    if not args.no_backbone:
        backbone, steps["backbone"] = backbone_step(generator=torch.Generator().manual_seed(0), **sizes)
    medians = interleaved_medians(steps, args.repeats, args.warmup)
    lines = [f"FTCL forward + backward, B={args.batch}, T={args.length}, D={args.dim}, float32, CPU, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}; median of "
             f"{args.repeats} after {args.warmup} warm-up; pairs (positive, negative): paper {pairs['paper']}, "
             f"official {pairs['official']}." + (f" Backbone: {backbone}, forward + loss + backward." if backbone
                                                 else ""),
             "", "| step | median ms | share of the backbone step |", "|---|---:|---:|"]
    rows = [(f"FTCL {variant}", medians[f"FTCL {variant}"]) for variant in VARIANTS]
    rows.append(("(B, T, D) gradient add into the embedding's gradient", medians["gradient add"]))
    rows += [(f"FTCL {variant} + gradient add", medians[f"FTCL {variant}"] + medians["gradient add"])
             for variant in VARIANTS]
    if backbone:
        rows.append(("backbone step", medians["backbone"]))
    for name, seconds in rows:
        share = f"{100 * seconds / medians['backbone']:.2f}%" if backbone else "-"
        lines.append(f"| {name} | {1000 * seconds:.1f} | {share} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
