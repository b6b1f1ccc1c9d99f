"""Time one training step of each baseline with and without FTCL at the paper's sizes; print a Markdown table.

    python benchmarks/bench_train_step.py                       # 16 videos, T=750, D=2048, CPU
    python benchmarks/bench_train_step.py --device cuda         # when a GPU is present
    python benchmarks/bench_train_step.py --batch 4 --length 200 --repeats 3   # a quick look

A step is forward, the baseline's own loss (+ FTCL), backward and an Adam update, on random features with
one-class labels drawn from 12 classes, so FTCL always finds in-batch pairs: about 10 same-class pairs in 16
videos, against about 5.2 in a random batch of THUMOS14 training videos (docs/losses.md, "Speed"). Steps with and
without FTCL alternate on one model, so drifting machine load hits both arms alike; the overhead ratio is (median
step with FTCL) / (median step without). Not a test.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._labels import one_class_labels  # noqa: E402
from integrations.common.config import load_config  # noqa: E402
from integrations.common.report import machine_description, markdown_table  # noqa: E402

BASELINES = ("acmnet", "cola", "wtalc", "stpn")


def time_steps(name: str, *, batch: int, length: int, dim: int, classes: int, repeats: int, warmup: int,
               device: torch.device, clock: str = "wall") -> tuple[float, float]:
    """Median seconds of one training step without and with FTCL, measured interleaved.

    One model carries the FTCL heads; steps alternate between the plain loss and the loss plus FTCL, so a machine
    whose load drifts (other jobs on a shared CPU) affects both arms alike. In the plain steps the FTCL heads get
    no gradient and Adam skips them, which is what a model without FTCL costs.

    Args:
        name: the baseline.
        batch: videos per step.
        length: T.
        dim: D.
        classes: C.
        repeats: timed steps per arm.
        warmup: untimed steps per arm first.
        device: where to run.
        clock: ``"wall"`` (elapsed time) or ``"cpu"`` (this process's CPU time, all threads: steadier on a shared
            machine, CPU only).

    Returns:
        ``(without, with_ftcl)`` median step times in seconds.
    """
    from ftcl_plugin import FTCL

    config = load_config(name, "thumos14", builtin_data=False)
    module = importlib.import_module(f"integrations.{name}.model")
    torch.manual_seed(0)
    model = module.build_model(config.get("model", {}) | {"_all": config}, num_classes=classes, feature_dim=dim)
    model.ftcl = FTCL(feature_dim=model.embedding_dim)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, length, dim, generator=generator).to(device)
    labels = one_class_labels(batch, classes, generator).to(device)
    lengths = torch.full((batch,), length, dtype=torch.int64, device=device)
    times: dict[bool, list[float]] = {False: [], True: []}
    timer = time.process_time if clock == "cpu" else time.perf_counter
    for index in range(warmup + repeats):
        for ftcl in (False, True):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = timer()
            output = model(features, lengths)
            loss, _ = model.loss(output, labels, index)
            if ftcl:
                loss = loss + model.ftcl(output.embedding, model.ftcl_attention(output), labels, lengths=lengths)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                times[ftcl].append(timer() - start)
    return statistics.median(times[False]), statistics.median(times[True])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Args:
        argv: the arguments.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=750)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or process CPU time (steadier when other jobs share the CPU)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name in [n.strip() for n in args.baselines.split(",") if n.strip()]:
        try:
            importlib.import_module(f"integrations.{name}.model")
        except ImportError as error:
            print(f"skipping {name}: {error}", file=sys.stderr)
            continue
        sizes = dict(batch=args.batch, length=args.length, dim=args.dim, classes=args.classes,
                     repeats=args.repeats, warmup=args.warmup, device=device, clock=args.clock)
        without, with_ftcl = time_steps(name, **sizes)
        rows.append([name, 1000 * without, 1000 * with_ftcl, with_ftcl / without])
        print(f"{name}: {1000 * without:.1f} ms -> {1000 * with_ftcl:.1f} ms", file=sys.stderr)
    text = (f"Training step (forward + loss + backward + Adam), B={args.batch}, T={args.length}, D={args.dim}, "
            f"C={args.classes}, median {args.clock} time of {args.repeats} after {args.warmup} warm-up steps per arm, arms "
            f"interleaved; "
            f"{machine_description()}.\n\n"
            + markdown_table(["baseline", "step ms", "step + FTCL ms", "ratio"],
                             [[r[0], r[1], r[2], f"{r[3]:.3f}"] for r in rows]))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
