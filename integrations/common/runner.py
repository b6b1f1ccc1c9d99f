"""The training and evaluation runner behind every ``integrations/<name>/train.py``.

``main(name, argv)`` parses the common flags, resolves the baseline's TOML config, trains the clean-room model with
or without FTCL (added as the README does: ``model.ftcl = FTCL(feature_dim=E)`` before the optimizer and
``loss = loss + ftcl(embedding, attention, labels)`` every step, scaled by a short linear warm-up), checkpoints,
evaluates with ``ftcl_plugin.localization`` and ``ftcl_plugin.evaluation`` and writes everything under ``--out``.
``--compare`` runs the paired protocol: one baseline pre-training, then both arms fine-tuned from that checkpoint
for the same steps with the same data order. Run under ``torchrun`` it trains data-parallel (gradients averaged by
all-reduce; FTCL pairs mined per rank, or across ranks with ``--ddp-gather``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .baseline import Baseline
from .config import dump_config, load_config, parse_override, set_dotted
from .report import ProgressBar, machine_description, markdown_table, summary_rows

__all__ = ["Context", "RunResult", "build_parser", "evaluate", "main", "paired_compare", "prepare", "train"]

DISPLAY_NAMES = {"acmnet": "ACM-Net", "cola": "CoLA", "wtalc": "W-TALC", "stpn": "STPN"}
BUILTIN_NAMES = {"thumos14": "thumos14-like", "activitynet": "activitynet-like"}


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def build_parser(name: str) -> argparse.ArgumentParser:
    """The command-line parser shared by every ``integrations/<name>/train.py``.

    Args:
        name: the baseline's directory name.

    Returns:
        The parser.
    """
    display = DISPLAY_NAMES.get(name, name)
    parser = argparse.ArgumentParser(
        prog=f"integrations/{name}/train.py",
        description=(
            f"Train and evaluate {display} with or without FTCL. With no arguments: {display} + FTCL on the built-in "
            "thumos14-like synthetic dataset, then the mAP table."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=None, metavar="DIR",
                      help="feature root of a real dataset (default: the built-in synthetic dataset)")
    data.add_argument("--layout", choices=["acmnet", "cola", "wtalc"], default=None,
                      help="layout of --data (default: acmnet)")
    data.add_argument("--dataset", choices=["thumos14", "activitynet"], default="thumos14",
                      help="selects the config (thresholds, T, hyperparameters) and the built-in dataset")
    model = parser.add_argument_group("FTCL")
    model.add_argument("--ftcl", dest="ftcl", action="store_true", default=None, help="add FTCL (default)")
    model.add_argument("--no-ftcl", dest="ftcl", action="store_false", help="train the plain baseline")
    model.add_argument("--fsd-weight", type=_non_negative, default=None, help="FSD weight (default: variant's)")
    model.add_argument("--lcs-weight", type=_non_negative, default=None, help="LCS weight (default: variant's)")
    model.add_argument("--variant", choices=["paper", "official"], default=None, help="FTCL defaults to follow")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=None, help="seed of init, data order and sampling")
    run.add_argument("--epochs", type=_positive_int, default=None, help="training epochs")
    run.add_argument("--iterations", type=_positive_int, default=None, help="cap on training steps")
    run.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    run.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                     help="start from this checkpoint's model weights (the release recipe: fine-tune a baseline)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: runs/<...>)")
    run.add_argument("--compare", action="store_true",
                     help="paired protocol: pre-train the baseline, fine-tune both arms from it, print the difference")
    run.add_argument("--best-on-test", action="store_true",
                     help="also report the epoch that is best on the test set (labelled; evaluates every epoch)")
    run.add_argument("--ddp-gather", action="store_true",
                     help="under torchrun: mine FTCL pairs across ranks (all-gather embedding and attention)")
    run.add_argument("--no-plot", action="store_true", help="skip the CAS/attention plot")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override any config value (TOML syntax), e.g. --set optim.lr=3e-4; repeatable")
    run.add_argument("--upstream", type=Path, default=None, metavar="PATH",
                     help="run the upstream codebase checked out at PATH with FTCL patched in")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def resolve_config(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read the baseline's config and apply the command line on top of it.

    Args:
        name: the baseline's directory name.
        args: the parsed flags.
        parser: the parser (for error messages).

    Returns:
        The resolved config.
    """
    config = load_config(name, args.dataset, builtin_data=args.data is None)
    for text in args.overrides:
        try:
            path, value = parse_override(text)
            set_dotted(config, path, value)
        except ValueError as error:
            parser.error(f"argument --set: {error}")
    flags = {
        ("train", "seed"): args.seed,
        ("train", "epochs"): args.epochs,
        ("train", "iterations"): args.iterations,
        ("ftcl", "enabled"): args.ftcl,
        ("ftcl", "variant"): args.variant,
        ("ftcl", "fsd_weight"): args.fsd_weight,
        ("ftcl", "lcs_weight"): args.lcs_weight,
    }
    for path, value in flags.items():
        if value is not None:
            set_dotted(config, list(path), value)
    config.setdefault("meta", {}).update(
        {"baseline": name, "dataset": args.dataset, "device": args.device,
         "data": str(args.data) if args.data is not None else f"builtin:{BUILTIN_NAMES[args.dataset]}",
         "layout": args.layout or "acmnet"}
    )
    return config


# --------------------------------------------------------------------------------------------------
# data and model
# --------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """Everything a training run needs besides its output folder: config, data, model factory, device.

    Attributes:
        name: the baseline's directory name.
        config: the resolved config.
        root: the feature root (the built-in dataset's cache folder or ``--data``).
        layout: the feature layout.
        test: the test split (uniform sampling).
        class_names: the dataset's class names.
        feature_dim: ``D``.
        device: the torch device.
        rank: this process's rank (0 without DDP).
        world: the number of processes (1 without DDP).
        ddp_gather: mine FTCL pairs across ranks.
        build_model: ``integrations.<name>.model.build_model``.
    """

    name: str
    config: dict[str, Any]
    root: Path
    layout: str
    test: Any
    class_names: list[str]
    feature_dim: int
    device: torch.device
    rank: int = 0
    world: int = 1
    ddp_gather: bool = False
    build_model: Callable[..., Baseline] | None = None
    _train: Any = None

    def train_split(self, epoch: int) -> Any:
        """The training split, its random temporal sampling seeded by (seed, epoch, video) so runs resume exactly.

        Args:
            epoch: the epoch number (0-based).

        Returns:
            The dataset object (opened once, re-seeded per epoch).
        """
        if self._train is None:
            from ftcl_plugin.data import open_dataset

            data = self.config["data"]
            self._train = open_dataset(
                self.root, "train", layout=self.layout, num_segments=data.get("train_segments", 750),
                sampling=data.get("train_sampling", "random"), seed=int(self.config["train"].get("seed", 0)),
                skip_missing=bool(data.get("skip_missing", False)),
            )
        self._train.set_epoch(epoch)
        return self._train


def prepare(name: str, config: dict[str, Any], *, data: Path | None, layout: str | None, device: str,
            ddp_gather: bool = False) -> Context:
    """Open the data, import the baseline and set up the (optional) process group.

    Args:
        name: the baseline's directory name.
        config: the resolved config.
        data: a real dataset's feature root, or ``None`` for the built-in synthetic dataset.
        layout: the layout of ``data``.
        device: ``"cpu"`` or ``"cuda"``.
        ddp_gather: mine FTCL pairs across ranks.

    Returns:
        The run context.
    """
    from ftcl_plugin.data import builtin, open_dataset

    data_cfg = config["data"]
    if data is None:
        layout = "acmnet"
        root = Path(builtin(data_cfg.get("builtin", "thumos14-like"), size=data_cfg.get("size", "small"),
                            difficulty=data_cfg.get("difficulty", "standard"), layout=layout))
    else:
        root, layout = data, layout or "acmnet"
    test = open_dataset(root, "test", layout=layout, num_segments=data_cfg.get("test_segments", 750),
                        sampling=data_cfg.get("test_sampling", "uniform"),
                        skip_missing=bool(data_cfg.get("skip_missing", False)))
    feature_dim = int(test[0].features.shape[-1])
    # The resolved root names the built-in dataset's generator version, so a run (and the reuse of a shared
    # pre-training) is tied to the exact data it saw.
    config.setdefault("meta", {})["data_root"] = str(Path(root).resolve())
    rank, world = _init_distributed(device)
    module = importlib.import_module(f"integrations.{name}.model")
    if device == "cuda":
        torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    else:
        torch_device = torch.device("cpu")
    return Context(name=name, config=config, root=root, layout=layout, test=test,
                   class_names=list(test.class_names), feature_dim=feature_dim, device=torch_device,
                   rank=rank, world=world, ddp_gather=ddp_gather, build_model=module.build_model)


def _init_distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def make_contrastive(ctx: Context, embedding_dim: int) -> nn.Module:
    """The FTCL module of the config's ``[ftcl]`` table (variant and weights; other keys go to ``FTCL``).

    Args:
        ctx: the run context.
        embedding_dim: ``E``.

    Returns:
        ``FTCL(feature_dim=E, ...)``.
    """
    from ftcl_plugin import FTCL

    options = {k: v for k, v in ctx.config.get("ftcl", {}).items() if k not in ("enabled", "warmup_steps")}
    return FTCL(feature_dim=embedding_dim, **options)


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one training run produced.

    Attributes:
        out: its output folder.
        last: the last epoch's evaluation (``detection_map`` result plus ``"cmap"``).
        best: the best-on-test evaluation and its epoch, when asked for.
        history: the per-epoch metrics rows.
        steps: the number of optimizer steps taken.
        seconds: wall time of training and evaluation.
        label: the row name.
    """

    out: Path
    last: dict[str, Any]
    best: dict[str, Any] | None
    history: list[dict[str, Any]]
    steps: int
    seconds: float
    label: str = ""


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up of the FTCL weight: ``(step + 1) / warmup_steps`` capped at 1 (0 steps = full weight).

    Contrastive terms at full weight from the first step stalled training in the calibration runs
    (``SYNTHETIC_NOTES.md``), hence the ramp.

    Args:
        step: the 0-based optimizer step of this run.
        warmup_steps: the ramp length.

    Returns:
        The factor in ``(0, 1]``.
    """
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def _batches(ctx: Context, labels: Tensor, epoch: int) -> list[list[int]]:
    """The epoch's batches of video indices, drawn from a generator seeded by (seed, epoch)."""
    cfg = ctx.config
    batch_size = int(cfg["optim"]["batch_size"])
    generator = torch.Generator().manual_seed(int(cfg["train"].get("seed", 0)) * 1_000_003 + epoch)
    if cfg["data"].get("sampler", "random") == "class_pair":
        from ftcl_plugin.data import ClassPairSampler

        return [list(map(int, b)) for b in ClassPairSampler(labels, batch_size, generator=generator)]
    order = torch.randperm(labels.shape[0], generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of a global batch (rank 0 takes the first ceil(B / world))."""
    per = math.ceil(len(indices) / world)
    return indices[rank * per:(rank + 1) * per]


def _gather(ctx: Context, embedding: Tensor, attention: Tensor, labels: Tensor, lengths: Tensor
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All-gather the FTCL inputs across ranks (differentiable), so pairs are mined over the global batch.

    Every rank then computes the same FTCL loss on the whole batch; the all-gather's backward sums the ranks'
    gradients into each rank's own videos, and the gradient average afterwards divides by the world size, so the
    update equals the single-process one. Ranks whose local batches differ in shape (a short last batch) fall
    back to mining within the rank.
    """
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    shape = torch.tensor(list(embedding.shape), dtype=torch.int64)
    shapes = [torch.zeros_like(shape) for _ in range(ctx.world)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        return embedding, attention, labels, lengths
    embedding = torch.cat(dist_fn.all_gather(embedding), dim=0)
    attention = torch.cat(dist_fn.all_gather(attention), dim=0)
    gathered = []
    for tensor in (labels, lengths):
        parts = [torch.zeros_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(parts, tensor)
        gathered.append(torch.cat(parts, dim=0))
    return embedding, attention, gathered[0], gathered[1]


def _average_gradients(model: nn.Module, world: int) -> None:
    import torch.distributed as dist

    for param in model.parameters():
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)
            param.grad.div_(world)


def _broadcast_parameters(model: nn.Module) -> None:
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load model weights from a run checkpoint or a bare state_dict; FTCL heads may be absent."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("ftcl.")]
    unexpected = [k for k in unexpected if not k.startswith("ftcl.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")


def train(ctx: Context, out: Path, *, ftcl: bool, init_from: Path | None = None, resume: bool = False,
          epochs: int | None = None, best_on_test: bool = False, plot: bool = True,
          contrastive: Callable[[int], nn.Module] | None = None, label: str = "") -> RunResult:
    """Train one arm, evaluate it and write its outputs under ``out``.

    Args:
        ctx: the run context.
        out: the output folder.
        ftcl: add the contrastive loss.
        init_from: a checkpoint to start from (fresh optimizer, step 0).
        resume: continue from ``out/checkpoints/last.pt``.
        epochs: epochs to train (default: ``train.epochs``).
        best_on_test: evaluate every epoch and also report the best epoch (labelled).
        plot: write ``plot.png``.
        contrastive: factory ``E -> module`` replacing FTCL (ablations, soft-DTW); ``None`` = FTCL from config.
        label: the row name in the printed table.

    Returns:
        The :class:`RunResult`.
    """
    cfg = ctx.config
    train_cfg = cfg["train"]
    seed = int(train_cfg.get("seed", 0))
    epochs = int(epochs if epochs is not None else train_cfg["epochs"])
    cap = int(train_cfg.get("iterations", 0) or 0)
    eval_every = int(train_cfg.get("eval_every", 0) or 0)
    warmup = int(cfg.get("ftcl", {}).get("warmup_steps", 0))
    scale = float(cfg["data"].get("input_scale", 1.0))
    main_rank = ctx.rank == 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)

    torch.manual_seed(seed)
    model = ctx.build_model(cfg.get("model", {}) | {"_all": cfg}, num_classes=len(ctx.class_names),
                            feature_dim=ctx.feature_dim)
    if ftcl:
        # The README's first line: the FTCL heads become part of the model before the optimizer is built.
        model.ftcl = (contrastive or (lambda e: make_contrastive(ctx, e)))(model.embedding_dim)
    if init_from is not None:
        _load_weights(model, init_from)
    model.to(ctx.device)
    if ctx.world > 1:
        _broadcast_parameters(model)
    # The training stream (dropout) is reseeded after every parameter is built, so arms that differ only by an
    # extra loss (and so by extra heads drawn at construction) see the same dropout masks. Ranks differ.
    torch.manual_seed(seed * 1_000_003 + 104_729 + 7919 * ctx.rank)
    optim_cfg = cfg["optim"]
    optimizer = torch.optim.Adam(model.parameters(), lr=float(optim_cfg["lr"]),
                                 betas=tuple(optim_cfg.get("betas", (0.9, 0.999))),
                                 weight_decay=float(optim_cfg.get("weight_decay", 0.0)))

    step, start_epoch, start_batch, history, best, partial = 0, 0, 0, [], None, {}
    last_path = out / "checkpoints" / "last.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}.")
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"][ctx.rank] if ctx.world > 1 else state["rng"][0])
        _set_generator_states(model, state["generators"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step, start_epoch, start_batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        history, best = list(state["history"]), state.get("best") or None
        partial = dict(state.get("partial", {}))
        if history and history[-1].get("partial"):
            history.pop()  # the partial epoch's row is rewritten when the epoch completes
    dump_config(cfg | {"run": _run_meta(ftcl, init_from, epochs, label)}, out / "config.json")

    labels_all = ctx.train_split(0).labels
    per_epoch = len(_batches(ctx, labels_all, 0))
    total = min(epochs * per_epoch, cap) if cap else epochs * per_epoch
    bar = ProgressBar(total, label or ctx.name, enabled=main_rank)
    bar.update(step)
    started = time.perf_counter()
    last_eval: dict[str, Any] | None = None
    epoch = start_epoch
    while epoch < epochs and (not cap or step < cap):
        split = ctx.train_split(epoch)
        batches = _batches(ctx, split.labels, epoch)
        # Sums of a partly trained epoch survive a stop at the iteration cap, so a resumed epoch logs one row.
        sums: dict[str, float] = dict(partial.get("sums", {}))
        count, correct, seen = (int(partial.get(k, 0)) for k in ("count", "correct", "seen"))
        stopped_at = None
        model.train()
        for index, batch_ids in enumerate(batches):
            if index < start_batch:
                continue
            if cap and step >= cap:
                stopped_at = index
                break
            parts, hits = _step(ctx, model, optimizer, split, _shard(batch_ids, ctx.rank, ctx.world), step,
                                ftcl=ftcl, warmup=warmup, scale=scale)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            correct += hits[0]
            seen += hits[1]
            step += 1
            bar.update(step, f"loss {parts['loss']:.3f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step}
        row.update({key: value / max(count, 1) for key, value in sums.items()})
        row["train_accuracy"] = correct / max(seen, 1)
        if stopped_at is not None:
            # Stopped by the iteration cap inside an epoch: log the partial epoch (replaced if resumed) and keep
            # its sums so a resumed run continues the same row.
            row["partial"] = 1
            start_batch = stopped_at
            partial = {"sums": sums, "count": count, "correct": correct, "seen": seen}
        else:
            start_batch, partial = 0, {}
        is_last = epoch + 1 == epochs or bool(cap and step >= cap)
        if main_rank and (is_last or best_on_test or (eval_every and (epoch + 1) % eval_every == 0)):
            last_eval = evaluate(ctx, model)
            row["test_cmap"] = last_eval["cmap"]
            row.update({f"mAP {k}": v for k, v in last_eval["summary"].items()})
            if best_on_test and (best is None or last_eval["average_mAP"] > best["average_mAP"]):
                best = {"epoch": epoch + 1, **_jsonable(last_eval)}
                torch.save({"model": model.state_dict()}, out / "checkpoints" / "best.pt")
        history.append(row)
        if stopped_at is None:
            epoch += 1
        rng = _rng_states(ctx)
        if main_rank:
            _save(last_path, model, optimizer, rng, step, epoch, start_batch, history, best, partial)
            _write_csv(out / "metrics.csv", history)
        if ctx.world > 1:
            import torch.distributed as dist

            dist.barrier()
        if stopped_at is not None:
            break
    bar.close()
    if last_eval is None and main_rank:
        last_eval = evaluate(ctx, model)
    seconds = time.perf_counter() - started
    result = RunResult(out=out, last=last_eval or {}, best=best, history=history, steps=step, seconds=seconds,
                       label=label)
    if main_rank:
        _write_outputs(ctx, model, result, label=label, plot=plot)
    return result


def _step(ctx: Context, model: Baseline, optimizer: torch.optim.Optimizer, split: Any, ids: list[int], step: int,
          *, ftcl: bool, warmup: int, scale: float) -> tuple[dict[str, float], tuple[int, int]]:
    from ftcl_plugin.data import collate_videos

    batch = collate_videos([split[i] for i in ids])
    features = batch.features.to(ctx.device) * scale
    labels = batch.labels.to(ctx.device)
    lengths = batch.lengths.to(ctx.device)
    output = model(features, lengths)
    loss, parts = model.loss(output, labels, step)
    logged = {key: float(value) for key, value in parts.items()}
    logged["base_loss"] = float(loss.detach())
    if ftcl:
        embedding, attention = output.embedding, model.ftcl_attention(output)
        pair_labels, pair_lengths = labels, lengths
        if ctx.world > 1 and ctx.ddp_gather:
            embedding, attention, pair_labels, pair_lengths = _gather(ctx, embedding, attention, labels, lengths)
        weight = warmup_factor(step, warmup)
        if hasattr(model.ftcl, "forward_terms"):
            terms = model.ftcl.forward_terms(embedding, attention, pair_labels, lengths=pair_lengths)
            extra = terms.loss
            logged.update({"fsd": float(terms.fsd.detach()), "lcs": float(terms.lcs.detach()),
                           "positive_pairs": float(terms.num_positive_pairs),
                           "negative_pairs": float(terms.num_negative_pairs)})
        else:
            extra = model.ftcl(embedding, attention, pair_labels, lengths=pair_lengths)
        # The README's second line, with the warm-up factor.
        loss = loss + weight * extra
        logged.update({"ftcl_loss": float(extra.detach()), "ftcl_weight": weight})
    logged["loss"] = float(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        loss.backward()
        if ctx.world > 1:
            _average_gradients(model, ctx.world)
        optimizer.step()
        logged["skipped"] = 0.0
    else:
        # As the reference implementations do: a non-finite loss skips the update (counted in the metrics).
        logged["skipped"] = 1.0
    with torch.no_grad():
        top1 = output.video_scores.argmax(dim=1)
        hits = int(labels.gather(1, top1[:, None]).gt(0).sum())
    return logged, (hits, len(ids))


def _run_meta(ftcl: bool, init_from: Path | None, epochs: int, label: str) -> dict[str, Any]:
    """The ``run`` table written into ``config.json`` beside the resolved config."""
    return {"ftcl": ftcl, "init_from": str(init_from) if init_from else None, "epochs": epochs, "label": label}


def _rng_states(ctx: Context) -> list[Tensor]:
    """Every rank's CPU RNG state (a collective under DDP: all ranks must call it)."""
    rng = [torch.get_rng_state()]
    if ctx.world > 1:
        import torch.distributed as dist

        rng = [torch.zeros_like(rng[0]) for _ in range(ctx.world)]
        dist.all_gather(rng, torch.get_rng_state())
    return rng


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rng: list[Tensor], step: int, epoch: int,
          batch: int, history: list[dict[str, Any]], best: dict[str, Any] | None, partial: dict[str, Any]) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
             "generators": _generator_states(model), "step": step,
             "epoch": epoch, "batch": batch, "history": history, "best": best or {},
             "partial": partial}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _generator_states(model: nn.Module) -> dict[str, Tensor]:
    """States of every ``torch.Generator`` held by a submodule (e.g. FTCL's pair miner), for exact resumption."""
    states = {}
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                states[f"{prefix}:{attr}"] = value.get_state()
    return states


def _set_generator_states(model: nn.Module, states: dict[str, Tensor]) -> None:
    modules = dict(model.named_modules())
    for key, state in states.items():
        prefix, attr = key.rsplit(":", 1)
        getattr(modules[prefix], attr).set_state(state)


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


# --------------------------------------------------------------------------------------------------
# evaluation and outputs
# --------------------------------------------------------------------------------------------------


def evaluate(ctx: Context, model: Baseline) -> dict[str, Any]:
    """Localize every test video and compute detection and classification mAP.

    Args:
        ctx: the run context.
        model: the trained model.

    Returns:
        The ``detection_map`` result with ``"cmap"`` (classification mAP) and ``"predictions"`` (results JSON).
    """
    from ftcl_plugin.evaluation import classification_map, detection_map
    from ftcl_plugin.localization import LocalizationConfig, localize, results_json

    cfg = ctx.config
    loc_cfg = LocalizationConfig(**(cfg.get("localization", {}) | model.localization_overrides()))
    scale = float(cfg["data"].get("input_scale", 1.0))
    was_training = model.training
    model.eval()
    proposals: dict[str, list[dict]] = {}
    scores, labels = [], []
    with torch.no_grad():
        for index in range(len(ctx.test)):
            record = ctx.test[index]
            features = record.features[None].to(ctx.device) * scale
            output = model(features, torch.tensor([features.shape[1]], device=ctx.device))
            cas, video_scores, attention = model.inference(output)
            proposals[record.video] = localize(
                cas, video_scores, attention=attention, class_names=ctx.class_names,
                num_snippets=int(record.num_snippets), duration=float(record.duration), config=loc_cfg,
            )
            scores.append(np.asarray(video_scores, dtype=np.float64))
            labels.append(record.label.numpy().astype(np.float64))
    model.train(was_training)
    predictions = results_json(proposals)
    result = detection_map(ctx.test.ground_truth, predictions, preset=cfg.get("evaluation", {}).get(
        "preset", "thumos14"), subset=ctx.test.subset)
    result["cmap"] = float(classification_map(np.stack(scores), np.stack(labels)))
    result["predictions"] = predictions
    return result


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an evaluation (no predictions or curves), with numpy scalars turned into floats."""
    keep = {k: v for k, v in result.items() if k != "predictions"}
    return json.loads(json.dumps(keep, default=float))


def row_name(ctx: Context, *, ftcl: bool, label: str = "") -> str:
    """The table row name of an arm, e.g. ``"ACM-Net + FTCL"``."""
    return label or (DISPLAY_NAMES.get(ctx.name, ctx.name) + (" + FTCL" if ftcl else ""))


def _write_outputs(ctx: Context, model: Baseline, result: RunResult, *, label: str, plot: bool) -> None:
    out = result.out
    (out / "predictions.json").write_text(json.dumps(result.last["predictions"]) + "\n")
    named = [(f"{label} (last epoch)", result.last["summary"])]
    if result.best:
        named.append((f"{label} (best-on-test, epoch {result.best['epoch']})", result.best["summary"]))
    header, rows = summary_rows(named)
    (out / "table.md").write_text(_data_note(ctx) + "\n\n" + markdown_table(header, rows) + "\n")
    (out / "table.json").write_text(json.dumps(
        {"rows": [{"name": n, "summary": s} for n, s in named], "last": _jsonable(result.last),
         "best_on_test": result.best, "steps": result.steps, "seconds": result.seconds,
         "data": ctx.config["meta"]["data"], "seed": ctx.config["train"].get("seed", 0),
         "machine": machine_description()}, indent=2, default=float) + "\n")
    if plot:
        note = plot_videos(ctx, model, out / "plot.png")
        if note:
            print(note, file=sys.stderr)


def _data_note(ctx: Context) -> str:
    meta = ctx.config["meta"]
    kind = "synthetic" if meta["data"].startswith("builtin:") else "real features"
    return (f"Data: {meta['data']} ({kind}), {len(ctx.test)} test videos; seed {ctx.config['train'].get('seed', 0)}; "
            f"machine: {machine_description()}. mAP in %, last epoch unless labelled.")


def plot_videos(ctx: Context, model: Baseline, path: Path, *, count: int | None = None) -> str:
    """Plot the CAS (ground-truth classes) and the attention of a few test videos against their ground truth.

    Args:
        ctx: the run context.
        model: the trained model.
        path: the PNG to write.
        count: videos to plot (default ``plot.videos`` or 3).

    Returns:
        ``""`` on success, or a note saying why no plot was written (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "note: matplotlib is not installed (pip install ftcl-plugin[plot]); no plot written."
    count = int(count or ctx.config.get("plot", {}).get("videos", 3))
    curves = _curves(ctx, model, count)
    figure, axes = plt.subplots(len(curves), 1, figsize=(10, 2.2 * len(curves)), squeeze=False)
    database = ctx.test.ground_truth["database"]
    for axis, curve in zip(axes[:, 0], curves):
        cas = curve["cas"]
        seconds = np.arange(cas.shape[0]) * curve["duration"] / max(cas.shape[0], 1)
        for segment in database.get(curve["video"], {}).get("annotations", []):
            axis.axvspan(*segment["segment"], color="tab:green", alpha=0.2)
        for c in np.flatnonzero(curve["label"]):
            axis.plot(seconds, cas[:, c], label=f"CAS {ctx.class_names[c]}")
        if curve["attention"] is not None:
            axis.plot(seconds, np.asarray(curve["attention"]), color="black", linestyle="--", label="attention")
        axis.set_title(f"{curve['video']} (green: ground truth)", fontsize=9)
        axis.set_ylim(-0.05, 1.05)
        axis.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return ""


def _curves(ctx: Context, model: Baseline, count: int) -> list[dict[str, Any]]:
    scale = float(ctx.config["data"].get("input_scale", 1.0))
    was_training = model.training
    model.eval()
    curves = []
    with torch.no_grad():
        for index in range(min(count, len(ctx.test))):
            record = ctx.test[index]
            output = model(record.features[None].to(ctx.device) * scale)
            cas, _, attention = model.inference(output)
            curves.append({"video": record.video, "cas": np.asarray(cas), "attention": attention,
                           "label": record.label.numpy(), "duration": float(record.duration)})
    model.train(was_training)
    return curves


# --------------------------------------------------------------------------------------------------
# paired protocol and entry point
# --------------------------------------------------------------------------------------------------


def _reusable(out: Path, config: dict[str, Any], epochs: int, run: dict[str, Any] | None = None) -> bool:
    """Whether ``out`` holds a finished run of exactly this config (so experiments can share or resume it).

    ``run`` is the run table to match too (``None``: ignore it, as for a pre-training shared between tables).
    """
    path, saved = out / "checkpoints" / "last.pt", out / "config.json"
    if not (path.is_file() and saved.is_file()):
        return False
    stored = json.loads(saved.read_text())
    stored_run = stored.pop("run", None)
    if stored != json.loads(json.dumps(config, default=str)):
        return False
    if run is not None and stored_run != json.loads(json.dumps(run, default=str)):
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["epoch"]) >= epochs and not state.get("partial")


def _load_result(out: Path, label: str) -> RunResult:
    """The :class:`RunResult` of a finished run, read back from its ``table.json``."""
    table = json.loads((out / "table.json").read_text())
    return RunResult(out=out, last=table["last"], best=table.get("best_on_test") or None, history=[],
                     steps=int(table["steps"]), seconds=float(table["seconds"]), label=label)


def paired_compare(ctx: Context, out: Path, *, init_from: Path | None = None, best_on_test: bool = False,
                   plot: bool = True, arms: dict[str, Callable[[int], nn.Module] | None] | None = None,
                   pretrain_dir: Path | None = None, reuse: bool = False) -> dict[str, Any]:
    """The paired protocol: pre-train the baseline once, then fine-tune every arm from that checkpoint.

    Every arm starts from the same weights, sees the same batches in the same order with the same temporal
    samples and dropout stream, and takes the same number of steps; only its extra loss differs.

    Args:
        ctx: the run context (``compare.pretrain_epochs`` and ``compare.finetune_epochs`` set the lengths).
        out: the output folder (``pretrain/`` and one folder per arm under it).
        init_from: skip pre-training and fine-tune from this checkpoint.
        best_on_test: also report best-on-test rows.
        plot: write plots.
        arms: arm name -> contrastive factory (``None`` = FTCL from the config); default
            ``{"baseline": no extra loss, "ftcl": FTCL}``. The arm named ``"baseline"`` trains without extra loss.
        pretrain_dir: where to pre-train (default ``out / "pretrain"``); a finished pre-training of the same config
            found there is reused.
        reuse: reuse arms already finished in ``out`` with the same config (adding seeds to a table).

    Returns:
        ``{"rows": [(name, summary)], "results": {arm: RunResult}, "difference": {column: with - without}}``.
    """
    compare = ctx.config.get("compare", {})
    display = DISPLAY_NAMES.get(ctx.name, ctx.name)
    if init_from is None:
        pre_out = pretrain_dir or out / "pretrain"
        epochs = int(compare.get("pretrain_epochs", 1))
        if not _reusable(pre_out, ctx.config, epochs):
            train(ctx, pre_out, ftcl=False, epochs=epochs, plot=False, label=f"{display} (pre-training)")
        init_from = pre_out / "checkpoints" / "last.pt"
    arms = arms if arms is not None else {"baseline": None, "ftcl": None}
    results: dict[str, RunResult] = {}
    epochs = int(compare.get("finetune_epochs", 1))
    for arm, factory in arms.items():
        name = display if arm == "baseline" else f"{display} + {'FTCL' if arm == 'ftcl' else arm}"
        meta = _run_meta(arm != "baseline", init_from, epochs, name)
        if reuse and _reusable(out / arm, ctx.config, epochs, meta) and (out / arm / "table.json").is_file():
            results[arm] = _load_result(out / arm, name)
            continue
        results[arm] = train(ctx, out / arm, ftcl=arm != "baseline", init_from=init_from, epochs=epochs,
                             best_on_test=best_on_test, plot=plot, contrastive=factory, label=name)
    rows = [(result.label, result.last.get("summary", {})) for result in results.values()]
    difference = {}
    if "baseline" in results and "ftcl" in results and ctx.rank == 0:
        base, with_ftcl = results["baseline"].last["summary"], results["ftcl"].last["summary"]
        difference = {k: with_ftcl[k] - base[k] for k in base}
    return {"rows": rows, "results": results, "difference": difference, "init_from": str(init_from)}


def default_out(name: str, args: argparse.Namespace, config: dict[str, Any]) -> Path:
    """``runs/<name>-<dataset>-<ftcl|baseline|compare>-seed<seed>``."""
    tag = "compare" if args.compare else ("ftcl" if config["ftcl"].get("enabled", True) else "baseline")
    return Path("runs") / f"{name}-{args.dataset}-{tag}-seed{config['train'].get('seed', 0)}"


def main(name: str, argv: list[str] | None = None) -> int:
    """Entry point of ``integrations/<name>/train.py``.

    Args:
        name: the baseline's directory name.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = build_parser(name)
    args = parser.parse_args(argv)
    if args.upstream is not None:
        from integrations.common.upstream import run_upstream

        return run_upstream(name, args)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda was requested but torch.cuda.is_available() is False")
    if args.layout is not None and args.data is None:
        parser.error("argument --layout: only meaningful with --data DIR")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"argument --data: {args.data} is not a directory")
    if args.resume and args.out is None:
        parser.error("argument --resume: needs --out DIR (the run to continue)")
    if args.resume and args.compare:
        parser.error("argument --resume: not supported with --compare (rerun the missing arm instead)")
    if args.init_from is not None and not args.init_from.is_file():
        parser.error(f"argument --init-from: {args.init_from} is not a file")
    try:
        config = resolve_config(name, args, parser)
    except FileNotFoundError as error:
        parser.error(f"argument --dataset: {error}")
    out = args.out or default_out(name, args, config)
    started = time.perf_counter()
    ctx = prepare(name, config, data=args.data, layout=args.layout, device=args.device, ddp_gather=args.ddp_gather)
    ftcl = bool(config["ftcl"].get("enabled", True))
    if args.compare:
        report = paired_compare(ctx, out, init_from=args.init_from, best_on_test=args.best_on_test,
                                plot=not args.no_plot)
        if ctx.rank == 0:
            header, rows = summary_rows(report["rows"])
            diff = report["difference"]
            rows.append(["difference (with - without)", *(f"{100.0 * diff[c]:+.1f}" for c in header[1:])])
            text = (f"{_data_note(ctx)}\nPaired protocol: both arms fine-tuned from {report['init_from']} for "
                    f"{report['results']['ftcl'].steps} steps.\n\n" + markdown_table(header, rows))
            (out / "compare.md").write_text(text + "\n")
            (out / "compare.json").write_text(json.dumps(
                {"rows": [{"name": n, "summary": s} for n, s in report["rows"]], "difference": diff,
                 "init_from": report["init_from"], "data": config["meta"]["data"],
                 "seed": config["train"].get("seed", 0), "machine": machine_description()},
                indent=2, default=float) + "\n")
            print(text)
    else:
        train(ctx, out, ftcl=ftcl, init_from=args.init_from, resume=args.resume,
              best_on_test=args.best_on_test, plot=not args.no_plot, label=row_name(ctx, ftcl=ftcl))
        if ctx.rank == 0:
            print((out / "table.md").read_text().rstrip())
    if ctx.rank == 0:
        print(f"\noutputs: {out}  ({time.perf_counter() - started:.0f} s)")
    if ctx.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
