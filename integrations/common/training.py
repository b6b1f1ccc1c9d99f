"""The training loop of one arm: data order, the FTCL step, DDP helpers, checkpoints and exact resumption.

FTCL is added exactly as the README does: ``model.ftcl = FTCL(feature_dim=E)`` before the optimizer and
``loss = loss + model.ftcl(embedding, attention, labels)`` every step; its warm-up is FTCL's own. Under ``torchrun``
gradients are averaged by all-reduce; FTCL pairs are mined per rank, or across ranks with ``ddp_gather``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ftcl_plugin.data import ClassPairSampler, SimilarPairSampler, collate_videos

from .baseline import Baseline
from .context import Context, RunResult, make_contrastive
from .files import CheckpointError, read_checkpoint, save_checkpoint
from .outputs import evaluate, jsonable, write_csv, write_outputs
from .report import ProgressBar
from .rundir import claim
from .settings import OptimSettings

__all__ = ["ACTIVITY_KEYS", "batches_of", "ftcl_terms_row", "run_meta", "train"]


def batches_of(ctx: Context, labels: Tensor, epoch: int) -> list[list[int]]:
    """The epoch's batches of video indices (``data.sampler``), drawn from a generator seeded by (seed, epoch)."""
    settings = ctx.settings
    batch_size = settings.optim.batch_size
    generator = torch.Generator().manual_seed(settings.train.seed * 1_000_003 + epoch)
    if settings.data.sampler == "class_pair":
        return [list(map(int, b)) for b in ClassPairSampler(labels, batch_size, generator=generator)]
    if settings.data.sampler == "similar_pairs":  # W-TALC's: pairs sharing a class at (0, 1), (2, 3), ...
        pairs = min(settings.data.similar_pairs, batch_size // 2)  # as many as a small batch holds
        return list(SimilarPairSampler(labels, batch_size, num_pairs=pairs, generator=generator))
    order = torch.randperm(labels.shape[0], generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _lr_schedule(optim: OptimSettings, epochs: int) -> Callable[[int], float]:
    """The learning rate of each epoch: ``optim.lr``, times ``optim.lr_decay_factor`` at every fraction of the run's
    epochs listed in ``optim.lr_decay_at`` (none by default: a constant lr).

    A pure function of the epoch (set at the start of each epoch, like the STPN reproduction's step decay), so a
    resumed run gets the same rate without scheduler state.
    """
    milestones = sorted(math.floor(fraction * epochs) for fraction in optim.lr_decay_at)
    return lambda epoch: optim.lr * optim.lr_decay_factor ** sum(epoch >= m for m in milestones)


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


#: What a run checkpoint (``checkpoints/last.pt``) must hold to be resumed.
RUN_CHECKPOINT_KEYS = ("model", "optimizer", "rng", "step", "epoch", "batch", "history")


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load model weights from a run checkpoint or a bare state_dict; FTCL heads may be absent."""
    state = read_checkpoint(path, "--init-from")
    state = state.get("model", state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"--init-from: {path} holds no model weights (no state_dict of tensors).")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:
        missing, unexpected = ["(tensor shapes differ)"], []
    missing = [k for k in missing if not k.startswith("ftcl.")]
    unexpected = [k for k in unexpected if not k.startswith("ftcl.")]
    if missing or unexpected:
        raise CheckpointError(f"--init-from: {path} does not match the model: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}.")


def train(ctx: Context, out: Path, *, ftcl: bool, init_from: Path | None = None, resume: bool = False,
          epochs: int | None = None, best_on_test: bool = False, plot: bool = True, label: str = "",
          overwrite: bool = False, wait: bool = False) -> RunResult:
    """Train one arm, evaluate it and write its outputs under ``out``, which it owns while it runs.

    Rank 0 claims ``out`` first (``rundir.claim``): it holds the folder's lock, refuses a folder holding a
    different run (unless ``overwrite``) and a ``resume`` with different settings, and writes ``config.json``
    before any other file.

    Args:
        ctx: the run context.
        out: the output folder.
        ftcl: add FTCL, built from the config's ``[ftcl]`` table as the README's two lines do.
        init_from: a checkpoint to start from (fresh optimizer, step 0).
        resume: continue from ``out/checkpoints/last.pt``.
        epochs: epochs to train (default: ``train.epochs``).
        best_on_test: evaluate every epoch and also report the best epoch (labelled).
        plot: write ``plot.png``.
        label: the row name in the printed table.
        overwrite: delete a different run found in ``out`` instead of refusing.
        wait: wait for another process using ``out`` to end instead of refusing.

    Returns:
        The :class:`RunResult`.

    Raises:
        RunFolderError: if ``out`` is in use or holds another run, or ``resume`` changes a setting.
        CheckpointError: for an unusable ``init_from`` or ``out/checkpoints/last.pt``.
    """
    epochs = epochs if epochs is not None else ctx.settings.train.epochs
    options = dict(ftcl=ftcl, init_from=init_from, resume=resume, epochs=epochs, best_on_test=best_on_test,
                   plot=plot, label=label)
    if ctx.rank != 0:
        return _train(ctx, out, **options)
    if init_from is not None:
        _load_weights(_build_model(ctx), init_from)  # a bad or foreign checkpoint is named before `out` is touched
    record = ctx.config | {"run": run_meta(ftcl, init_from, epochs, label, best_on_test)}
    with claim(out, record, resume=resume, overwrite=overwrite, wait=wait):
        return _train(ctx, out, **options)


def _build_model(ctx: Context) -> Baseline:
    return ctx.build_model(dict(ctx.settings.model) | {"_all": ctx.config}, num_classes=len(ctx.class_names),
                           feature_dim=ctx.feature_dim)


def _train(ctx: Context, out: Path, *, ftcl: bool, init_from: Path | None, resume: bool, epochs: int,
           best_on_test: bool, plot: bool, label: str) -> RunResult:
    settings = ctx.settings
    seed, cap, eval_every = settings.train.seed, settings.train.iterations, settings.train.eval_every
    scale = settings.data.input_scale
    main_rank = ctx.rank == 0
    if main_rank:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    model = _build_model(ctx)
    if ftcl:
        # The README's first line: the FTCL heads become part of the model before the optimizer is built.
        model.ftcl = make_contrastive(ctx, model.embedding_dim)
    if init_from is not None:
        _load_weights(model, init_from)
    model.to(ctx.device)
    if ctx.world > 1:
        _broadcast_parameters(model)
    # The training stream (dropout) is reseeded after every parameter is built, so arms that differ only by an
    # extra loss (and so by extra heads drawn at construction) see the same dropout masks. Ranks differ.
    torch.manual_seed(seed * 1_000_003 + 104_729 + 7919 * ctx.rank)
    optim = settings.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    lr_at = _lr_schedule(optim, epochs)

    step, start_epoch, start_batch, history, best, partial = 0, 0, 0, [], None, {}
    totals: dict[str, list[float]] = {}  # run-long (sum, count) of each FTCL activity value
    last_path = out / "checkpoints" / "last.pt"
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"--resume: {last_path} does not exist (the run stopped before its first "
                                  "checkpoint); run the command without --resume to start it over.")
        state = read_checkpoint(last_path, "--resume", require=RUN_CHECKPOINT_KEYS)
        try:
            model.load_state_dict(state["model"])
            if "ftcl" in state and hasattr(model, "ftcl"):
                # FTCL keeps its state out of the host's state_dict: projections, schedule, gradient-share
                # estimates and the miner's generator.
                model.ftcl.load_state_dict(state["ftcl"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"][ctx.rank] if ctx.world > 1 else state["rng"][0])
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as error:
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"--resume: {last_path} does not match the model and optimizer built from "
                                  f"{out / 'config.json'} ({reason}).") from None
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step, start_epoch, start_batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        history, best = list(state["history"]), state.get("best") or None
        partial = dict(state.get("partial", {}))
        totals = {key: list(value) for key, value in state.get("totals", {}).items()}
        if history and history[-1].get("partial"):
            history.pop()  # the partial epoch's row is rewritten when the epoch completes

    labels_all = ctx.train_split(0).labels
    per_epoch = len(batches_of(ctx, labels_all, 0))
    total = min(epochs * per_epoch, cap) if cap else epochs * per_epoch
    bar = ProgressBar(total, label or ctx.name, enabled=main_rank)
    bar.update(step)
    started = time.perf_counter()
    last_eval: dict[str, Any] | None = None
    epoch = start_epoch
    while epoch < epochs and (not cap or step < cap):
        split = ctx.train_split(epoch)
        batches = batches_of(ctx, split.labels, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch)
        # Sums of a partly trained epoch survive a stop at the iteration cap, so a resumed epoch logs one row.
        sums: dict[str, float] = dict(partial.get("sums", {}))
        count, correct, seen = (int(partial.get(k, 0)) for k in ("count", "correct", "seen"))
        # a value a step did not log (FTCL's activity on a batch without positive pairs) is left out of its mean
        counts: dict[str, int] = dict(partial.get("counts", {key: count for key in sums}))
        stopped_at = None
        if start_batch:
            # A resumed epoch: the reads of the batches trained before the stop are counted, so a video read again
            # later in the epoch (W-TALC's sampler repeats videos) draws the sample an uninterrupted run draws.
            split.skip_reads([i for ids in batches[:start_batch] for i in _shard(ids, ctx.rank, ctx.world)])
        model.train()
        for index, batch_ids in enumerate(batches):
            if index < start_batch:
                continue
            if cap and step >= cap:
                stopped_at = index
                break
            parts, hits = _step(ctx, model, optimizer, split, _shard(batch_ids, ctx.rank, ctx.world), step,
                                ftcl=ftcl, scale=scale)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
                if key in ACTIVITY_KEYS:
                    total = totals.setdefault(key, [0.0, 0])
                    total[0], total[1] = total[0] + value, total[1] + 1
            count += 1
            correct += hits[0]
            seen += hits[1]
            step += 1
            bar.update(step, f"loss {parts['loss']:.3f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step}
        row.update({key: value / max(counts.get(key, count), 1) for key, value in sums.items()})
        row["train_accuracy"] = correct / max(seen, 1)
        if stopped_at is not None:
            # Stopped by the iteration cap inside an epoch: log the partial epoch (replaced if resumed) and keep
            # its sums so a resumed run continues the same row.
            row["partial"] = 1
            start_batch = stopped_at
            partial = {"sums": sums, "counts": counts, "count": count, "correct": correct, "seen": seen}
        else:
            start_batch, partial = 0, {}
        is_last = epoch + 1 == epochs or bool(cap and step >= cap)
        if main_rank and (is_last or best_on_test or (eval_every and (epoch + 1) % eval_every == 0)):
            last_eval = evaluate(ctx, model)
            row["test_cmap"] = last_eval["cmap"]
            row.update({f"mAP {k}": v for k, v in last_eval["summary"].items()})
            if best_on_test and (best is None or last_eval["average_mAP"] > best["average_mAP"]):
                best = {"epoch": epoch + 1, **jsonable(last_eval)}
                save_checkpoint(out / "checkpoints" / "best.pt", {"model": model.state_dict()})
        history.append(row)
        if stopped_at is None:
            epoch += 1
        rng = _rng_states(ctx)
        if main_rank:
            _save(last_path, model, optimizer, rng, step, epoch, start_batch, history, best, partial, totals)
            write_csv(out / "metrics.csv", history)
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
                       label=label, activity={key: total / number for key, (total, number) in totals.items()})
    if main_rank:
        write_outputs(ctx, model, result, label=label, plot=plot)
    return result


def _step(ctx: Context, model: Baseline, optimizer: torch.optim.Optimizer, split: Any, ids: list[int], step: int,
          *, ftcl: bool, scale: float) -> tuple[dict[str, float], tuple[int, int]]:
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
        # The README's second line, nothing more: the warm-up schedule is FTCL's own.
        loss = loss + model.ftcl(embedding, attention, pair_labels, lengths=pair_lengths)
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
    terms = getattr(getattr(model, "ftcl", None), "last_terms", None) if ftcl else None
    if terms is not None:
        # Read after the backward pass, which fills in FTCL's gradient share on the embedding.
        row = ftcl_terms_row(terms)
        skipped = [key for key, term in (("fsd_active_fraction", "fsd_weight"), ("lcs_active_fraction", "lcs_weight"),
                                         ("lcs_threshold", "lcs_weight")) if getattr(model.ftcl, term, 1.0) == 0]
        if not row.get("positive_pairs", 1):  # the activity of a batch without positive pairs means nothing
            skipped += ["fsd_active_fraction", "lcs_active_fraction", "lcs_threshold"]
        for key in skipped:  # nor does that of a term switched off by a zero weight
            row.pop(key, None)
        logged.update({key: value for key, value in row.items() if math.isfinite(value)})
    with torch.no_grad():
        top1 = output.video_scores.argmax(dim=1)
        hits = int(labels.gather(1, top1[:, None]).gt(0).sum())
    return logged, (hits, len(ids))


#: The per-step FTCL values whose mean over a run is its activity record (``RunResult.activity``).
ACTIVITY_KEYS = ("ftcl_loss", "fsd", "lcs", "ftcl_weight", "positive_pairs", "negative_pairs", "fsd_active_fraction",
                 "lcs_active_fraction", "lcs_threshold", "ftcl_grad_ratio")


def ftcl_terms_row(terms: Any) -> dict[str, float]:
    """The metrics row of one step's ``FTCL.last_terms``: the terms, their activity and FTCL's gradient share.

    Args:
        terms: an ``FTCLTerms`` (or any object with its fields).

    Returns:
        Floats keyed ``ftcl_loss``, ``fsd``, ``lcs``, ``ftcl_weight``, ``positive_pairs``, ``negative_pairs``,
        ``fsd_active_fraction``, ``lcs_active_fraction``, ``lcs_threshold``, ``ftcl_grad_ratio``.
    """
    names = {"loss": "ftcl_loss", "fsd": "fsd", "lcs": "lcs", "weight": "ftcl_weight",
             "num_positive_pairs": "positive_pairs", "num_negative_pairs": "negative_pairs",
             "fsd_active_fraction": "fsd_active_fraction", "lcs_active_fraction": "lcs_active_fraction",
             "lcs_threshold": "lcs_threshold", "grad_ratio": "ftcl_grad_ratio"}
    return {key: float(getattr(terms, field)) for field, key in names.items() if hasattr(terms, field)}


def run_meta(ftcl: bool, init_from: Path | None, epochs: int, label: str, best_on_test: bool = False
             ) -> dict[str, Any]:
    """The ``run`` table written into ``config.json`` beside the resolved config."""
    return {"ftcl": ftcl, "init_from": str(init_from) if init_from else None, "epochs": epochs, "label": label,
            "best_on_test": best_on_test}


def _rng_states(ctx: Context) -> list[Tensor]:
    """Every rank's CPU RNG state (a collective under DDP: all ranks must call it)."""
    rng = [torch.get_rng_state()]
    if ctx.world > 1:
        import torch.distributed as dist

        rng = [torch.zeros_like(rng[0]) for _ in range(ctx.world)]
        dist.all_gather(rng, torch.get_rng_state())
    return rng


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rng: list[Tensor], step: int, epoch: int,
          batch: int, history: list[dict[str, Any]], best: dict[str, Any] | None, partial: dict[str, Any],
          totals: dict[str, list[float]]) -> None:
    """Write the run checkpoint atomically; one entry per piece of state (a new piece is one more key)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [], "step": step,
             "epoch": epoch, "batch": batch, "history": history, "best": best or {},
             "partial": partial, "totals": totals}
    if hasattr(model, "ftcl"):
        state["ftcl"] = model.ftcl.state_dict()
    save_checkpoint(path, state)
