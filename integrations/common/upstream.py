"""``integrations/<name>/train.py --upstream PATH``: train the user's own checkout of the baseline with FTCL added.

The upstream's model class, dataset class, loss and per-step (or per-epoch) training function run unchanged from the
checkout; ``patches/<name>.py`` makes them run on today's numpy/torch and on the chosen device, hooks FTCL onto the
embedding and the attention, adds the FTCL parameters to the upstream optimizer and the FTCL loss to the upstream
loss. Afterwards the upstream's own evaluation runs where it can, and our localization and evaluator score the same
model, so the outputs match the clean-room mode: ``metrics.csv``, ``predictions.json``, ``table.md``,
``table.json``, plus ``upstream.json`` (the checkout, its identification and the upstream's own numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from patches._common import UpstreamError, check_checkout

from .baseline import Baseline, BaselineOutput, check_single_video, minmax_over_time, to_numpy

__all__ = ["NEEDED_LAYOUT", "UpstreamModel", "run_upstream"]

#: The on-disk layout each upstream's own dataset class reads (STPN's is written from an acmnet-layout dataset).
NEEDED_LAYOUT = {"acmnet": "acmnet", "cola": "cola", "wtalc": "wtalc", "stpn": "acmnet"}


class UpstreamModel(Baseline):
    """Wraps an upstream model so our localization and evaluator can score it (inference only).

    Args:
        name: the baseline's name.
        model: the upstream model.
        run: ``features (1, T, D) -> (cas (T, C), video_scores (C,), attention (T,) or None)`` as tensors, the
            upstream's outputs mapped the way its own inference reads them.
        overrides: ``LocalizationConfig`` keyword overrides.
    """

    def __init__(self, name: str, model: nn.Module, run: Any, overrides: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.name = name
        self.upstream = model
        self._run = run
        self._overrides = overrides or {}

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:
        """Run the upstream model on one video and keep what inference needs."""
        cas, video_scores, attention = self._run(features)
        return BaselineOutput(embedding=features, attention=None if attention is None else attention[None],
                              cas=cas[None], video_scores=video_scores[None])

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(cas, video_scores, attention)`` of one video as numpy arrays."""
        check_single_video(output)
        attention = None if output.attention is None else to_numpy(output.attention[0])
        return to_numpy(output.cas[0]), to_numpy(output.video_scores[0]), attention

    def localization_overrides(self) -> dict[str, object]:
        """The localization settings this upstream's inference uses."""
        return dict(self._overrides)


class _Capped:
    """Iterate ``loader`` but stop after ``budget`` batches (for ``--iterations`` inside an upstream epoch loop)."""

    def __init__(self, loader: Any, budget: int) -> None:
        self.loader, self.budget, self.taken = loader, budget, 0

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if self.taken >= self.budget:
                return
            self.taken += 1
            yield batch

    def __len__(self) -> int:
        return min(len(self.loader), self.budget)


class _Tee(io.TextIOBase):
    """Copy what the upstream prints to the console into a log file as well."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _seed_everything(seed: int) -> None:
    # The upstream code draws from the global RNGs (np.random in its samplers, torch for init and dropout).
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _resolve(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    from .runner import resolve_config

    try:
        config = resolve_config(name, args, parser)
    except FileNotFoundError as error:
        parser.error(f"argument --dataset: {error}")
    config["meta"]["layout"] = NEEDED_LAYOUT[name]
    config["meta"]["upstream"] = str(args.upstream)
    # The upstream reads the features as they are stored; no input scaling in this mode.
    config.setdefault("data", {})["input_scale"] = 1.0
    return config


def _make_ftcl(config: dict[str, Any], feature_dim: int, device: torch.device) -> nn.Module | None:
    if not config.get("ftcl", {}).get("enabled", True):
        return None
    from .context import ftcl_from_config

    return ftcl_from_config(config, feature_dim).to(device)


def _data_root(name: str, args: argparse.Namespace, config: dict[str, Any], parser: argparse.ArgumentParser) -> Path:
    from ftcl_plugin.data import builtin

    needed = NEEDED_LAYOUT[name]
    if args.data is None:
        data = config["data"]
        return Path(builtin(data.get("builtin", "thumos14-like"), size=data.get("size", "small"),
                            difficulty=data.get("difficulty", "standard"), layout=needed))
    if args.layout is not None and args.layout != needed:
        parser.error(f"argument --layout: the upstream {name} code reads the {needed} layout, not {args.layout} "
                     f"(convert with `ftcl-data convert`).")
    if not args.data.is_dir():
        parser.error(f"argument --data: {args.data} is not a directory")
    return args.data


def run_upstream(name: str, args: argparse.Namespace) -> int:
    """Train and evaluate the upstream checkout at ``args.upstream`` with FTCL patched in.

    Args:
        name: ``"acmnet"``, ``"cola"``, ``"wtalc"`` or ``"stpn"``.
        args: the runner's parsed flags (``upstream``, ``data``, ``layout``, ``dataset``, ``ftcl``,
            ``fsd_weight``, ``lcs_weight``, ``variant``, ``seed``, ``epochs``, ``iterations``, ``device``,
            ``out``, ``no_plot``, ``overrides``).

    Returns:
        The exit status (0 on success).

    Raises:
        SystemExit: with status 2 and an ``argument --upstream: ...`` message for a checkout that is not the
            supported commit, lacks a file, or whose classes or signatures changed (and for the other flag errors).
    """
    from ftcl_plugin.data import open_dataset
    from patches import SUPPORTED, get

    from .context import Context
    from .runner import build_parser

    parser = build_parser(name)
    if name not in SUPPORTED:
        parser.error(f"argument --upstream: no upstream patch for {name!r} (supported: {', '.join(SUPPORTED)})")
    if args.dataset != "thumos14":
        parser.error("argument --dataset: the --upstream mode drives the upstream's THUMOS14 recipe only")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda was requested but torch.cuda.is_available() is False")
    for flag in ("compare", "resume", "ddp_gather", "best_on_test"):
        if getattr(args, flag, False):
            parser.error(f"argument --{flag.replace('_', '-')}: not available with --upstream")
    patch = get(name)
    try:
        # Refuse a wrong checkout before any data is read or generated.
        check_checkout(args.upstream, patch.SPEC)
    except UpstreamError as error:
        parser.error(f"argument --upstream: {error}")
    config = _resolve(name, args, parser)
    root = _data_root(name, args, config, parser)
    seed = int(config["train"].get("seed", 0))
    ftcl_on = bool(config.get("ftcl", {}).get("enabled", True))
    tag = "ftcl" if ftcl_on else "baseline"
    out = Path(args.out) if args.out is not None else Path("runs") / f"{name}-upstream-{tag}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    layout = "acmnet" if name == "stpn" else NEEDED_LAYOUT[name]
    sampling = config["data"].get("test_sampling", "uniform")
    segments = config["data"].get("test_segments", 750)
    test = open_dataset(root, "test", layout=layout, sampling=sampling,
                        num_segments=segments if segments and sampling != "full" else None)
    ctx = Context(name=name, config=config, root=root, layout=layout, test=test, class_names=list(test.class_names),
                  feature_dim=int(test[0].features.shape[-1]), device=device)
    if args.init_from is not None and not args.init_from.is_file():
        parser.error(f"argument --init-from: {args.init_from} is not a file")
    config["meta"]["init_from"] = str(args.init_from) if args.init_from is not None else None
    started = time.perf_counter()
    log_path = out / "upstream.log"
    try:
        with log_path.open("w") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
            report, stand_ins, identified_by, steps = _run_in_session(patch, args, ctx, config, out, seed, ftcl_on,
                                                                      started)
    except UpstreamError as error:
        parser.error(f"argument --upstream: {error}")
    (out / "upstream.json").write_text(json.dumps(
        {"baseline": name, "repository": patch.SPEC.repository, "commit": patch.SPEC.commit,
         "checkout": str(Path(args.upstream).resolve()), "identified_by": identified_by,
         "stand_ins": stand_ins, "data": str(root), "ftcl": ftcl_on, "seed": seed, "steps": steps,
         **report}, indent=2, default=_json_default) + "\n")
    print((out / "table.md").read_text().rstrip())
    own = report.get("upstream_evaluation")
    if own:
        print(f"\nupstream's own evaluation: {json.dumps(own, default=_json_default)}")
    print(f"\noutputs: {out}  ({time.perf_counter() - started:.0f} s)")
    return 0


def _run_in_session(patch: Any, args: argparse.Namespace, ctx: Any, config: dict[str, Any], out: Path, seed: int,
                    ftcl_on: bool, started: float) -> tuple[dict[str, Any], list[str], str, int]:
    """Train, evaluate and write the outputs, all inside one upstream session."""
    from .context import RunResult
    from .outputs import evaluate, row_name, write_csv, write_outputs

    with patch.session(args.upstream, device=ctx.device) as up:
        stand_ins = list(up.stand_ins)
        print(f"[ftcl-upstream] {patch.SPEC.short} at {up.root} ({up.identified_by}); "
              f"stand-ins for missing packages: {', '.join(stand_ins) or 'none'}")
        report = _DRIVERS[ctx.name](up, patch, ctx, config, out, seed=seed)
        model = report.pop("model")
        history = report.pop("history")
        (out / "checkpoints").mkdir(exist_ok=True)
        # The upstream model's own state_dict (loadable by its code, and by --init-from here); FTCL's heads are a
        # training aid and are not saved.
        torch.save({"model": model.upstream.state_dict()}, out / "checkpoints" / "last.pt")
        # Still inside the session: some upstream forwards call .cuda(), which the session redirects.
        last = evaluate(ctx, model)
        write_csv(out / "metrics.csv", history)
        steps = int(history[-1]["step"]) if history else 0
        result = RunResult(out=out, last=last, best=None, history=history, steps=steps,
                           seconds=time.perf_counter() - started)
        label = row_name(ctx, ftcl=ftcl_on) + " (upstream)"
        write_outputs(ctx, model, result, label=label, plot=not getattr(args, "no_plot", False))
        return report, stand_ins, up.identified_by, steps


def _init_from(model: nn.Module, config: dict[str, Any]) -> None:
    """Load ``--init-from`` into the upstream model (its own checkpoint format: a state_dict, or ACM-Net's
    ``{"model_state_dict": ...}``), before FTCL is attached."""
    path = config["meta"].get("init_from")
    if not path:
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        state = state.get("model_state_dict", state.get("model", state))
    model.load_state_dict(state)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _epoch_row(epoch: int, step: int, logged: dict[str, Any], ftcl_values: list[float]) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "step": step}
    for key, value in logged.items():
        if isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value)):
            row[key] = float(value)
    if ftcl_values:
        row["ftcl_loss"] = float(np.mean(ftcl_values))
    return row


# ---------------------------------------------------------------------------------------------------------------
# ACM-Net


def _drive_acmnet(up: Any, patch: Any, ctx: Any, config: dict[str, Any], out: Path, *, seed: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    pieces = patch.load(up)
    pieces.set_random_seed(seed)
    _seed_everything(seed)
    batch_size = int(config.get("optim", {}).get("batch_size", 16))
    epochs = int(config["train"].get("epochs", 1))
    cap = int(config["train"].get("iterations", 0) or 0)
    save_dir = out / "upstream"
    save_dir.mkdir(exist_ok=True)
    up_args = patch.build_args(
        up, pieces, argv=["--without_wandb", "--batch_size", str(batch_size), "--epochs", str(epochs),
                          "--num_workers", "0"],
        data_dir=str(ctx.root), test_gt_file_path=str(ctx.root / "gt.json"), class_name_lst=list(ctx.class_names),
        action_cls_num=len(ctx.class_names), feature_dim=ctx.feature_dim, save_dir=str(save_dir), device=ctx.device,
    )
    model = pieces.ACMNet(up_args)
    _init_from(model, config)  # main_thu.main loads --checkpoint here, before .to(device)
    model = model.to(ctx.device)
    # As main_thu.main builds them.
    optimizer = torch.optim.Adam(model.parameters(), lr=up_args.lr, betas=(0.9, 0.999),
                                 weight_decay=up_args.weight_decay)
    criterion = pieces.ACMLoss(lamb1=up_args.loss_lamb_1, lamb2=up_args.loss_lamb_2, lamb3=up_args.loss_lamb_3)
    ftcl = _make_ftcl(config, up_args.feature_dim, ctx.device)
    attachment = patch.attach(model, optimizer, criterion, ftcl)
    train_set = pieces.build_dataset(up_args, phase="train", sample="random")
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=False,
                        generator=torch.Generator().manual_seed(seed))
    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(epochs):
        budget = cap - step if cap else len(loader)
        if budget <= 0:
            break
        capped = _Capped(loader, budget)
        before = len(attachment.history)
        logged = pieces.train(up_args, model, capped, criterion, optimizer)  # the upstream's epoch, FTCL inside
        step += capped.taken
        history.append(_epoch_row(epoch + 1, step, logged, attachment.history[before:]))
    attachment.remove()
    own: dict[str, Any] = {}
    test_set = pieces.build_dataset(up_args, phase="test", sample="uniform")
    test_loader = DataLoader(test_set, batch_size=1, shuffle=False, num_workers=0)
    with torch.no_grad():
        test_log, _ = pieces.test(up_args, model, test_loader, criterion)
    own = {"name": "ACM-Net ANETDetection (main_thu.test), mean over tIoU 0.1:0.9",
           "tiou_thresholds": [round(float(t), 2) for t in up_args.tiou_thresholds],
           "average_mAP": float(test_log["test_mAP"]), "test_acc": float(test_log["test_acc"])}
    num_classes = len(ctx.class_names)

    def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = model(features)
        act_inst_cls, temp_att, act_inst_cas = outputs[0], outputs[6], outputs[7]
        # As main_thu.test reads them: the instance CAS and video score without the background column, and the
        # instance attention channel.
        return act_inst_cas[0, :, :num_classes], act_inst_cls[0, :num_classes], temp_att[0, :, 0]

    return {"model": UpstreamModel("acmnet", model, run), "history": history,
            "upstream_evaluation": own, "ftcl_steps": len(attachment.history)}


# ---------------------------------------------------------------------------------------------------------------
# CoLA


class _RecordingWriter:
    """Collects what the upstream logs through a tensorboard-style ``add_scalar`` / ``log_value``."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add_scalar(self, key: str, value: Any, step: int | None = None) -> None:
        value = value.detach() if isinstance(value, Tensor) else value
        self.values.setdefault(key, []).append(float(value))

    def log_value(self, key: str, value: Any, step: int | None = None) -> None:
        self.add_scalar(key, value, step)

    def means_since(self, marks: dict[str, int]) -> dict[str, float]:
        return {key: float(np.mean(values[marks.get(key, 0):])) for key, values in self.values.items()
                if len(values) > marks.get(key, 0)}

    def marks(self) -> dict[str, int]:
        return {key: len(values) for key, values in self.values.items()}



def _cola_lr(value: Any) -> float:
    # cfg.LR is a string like '[0.0001]*6000' that main() evaluates; read its first rate without eval.
    if isinstance(value, (list, tuple)):
        return float(value[0])
    text = str(value).strip()
    inner = text[text.find("[") + 1:text.find("]")] if "[" in text else text
    return float(inner.split(",")[0])


def _drive_cola(up: Any, patch: Any, ctx: Any, config: dict[str, Any], out: Path, *, seed: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    pieces = patch.load(up)
    cfg = pieces.cfg
    save_dir = out / "upstream"
    save_dir.mkdir(exist_ok=True)
    num_classes = len(ctx.class_names)
    # The data path, class list and sizes come from the dataset; everything else is CoLA's own config.
    cfg.MODE = "train"
    cfg.DATA_PATH = str(ctx.root)
    cfg.GT_PATH = str(ctx.root / "gt.json")
    cfg.NUM_CLASSES = num_classes
    cfg.CLASS_DICT = {name: i for i, name in enumerate(ctx.class_names)}
    cfg.FEATS_DIM = ctx.feature_dim
    cfg.NUM_WORKERS = 0
    cfg.SEED = seed
    cfg.OUTPUT_PATH = str(save_dir)
    cfg.BATCH_SIZE = int(config.get("optim", {}).get("batch_size", cfg.BATCH_SIZE))
    pieces.utils.set_seed(seed)
    _seed_everything(seed)
    net = pieces.CoLA(cfg)
    _init_from(net, config)
    net = net.cuda()  # the upstream's own call; the session sends it to the chosen device
    lr = _cola_lr(cfg.LR)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0005)  # as main()
    criterion = pieces.TotalLoss()
    ftcl = _make_ftcl(config, patch.embedding_dim(net), ctx.device)
    attachment = patch.attach(net, optimizer, criterion, ftcl)
    train_set = pieces.NpyFeature(data_path=cfg.DATA_PATH, mode="train", modal=cfg.MODAL, feature_fps=cfg.FEATS_FPS,
                                  num_segments=cfg.NUM_SEGMENTS, supervision="weak", class_dict=cfg.CLASS_DICT,
                                  seed=cfg.SEED, sampling="random")
    loader = DataLoader(train_set, batch_size=cfg.BATCH_SIZE, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    per_epoch = len(loader)
    epochs = int(config["train"].get("epochs", 1))
    cap = int(config["train"].get("iterations", 0) or 0)
    total = min(cap, epochs * per_epoch) if cap else epochs * per_epoch
    writer = _RecordingWriter()
    history: list[dict[str, Any]] = []
    marks, before = writer.marks(), 0
    loader_iter = iter(loader)
    for step in range(1, total + 1):
        if (step - 1) % per_epoch == 0:
            loader_iter = iter(loader)  # as main(): a fresh pass over the loader every len(loader) steps
        pieces.train_one_step(net, loader_iter, optimizer, criterion, writer, step)  # the upstream step
        if step % per_epoch == 0 or step == total:
            row = _epoch_row(math.ceil(step / per_epoch), step, writer.means_since(marks),
                             attachment.history[before:])
            history.append(row)
            marks, before = writer.marks(), len(attachment.history)
    attachment.remove()
    test_set = pieces.NpyFeature(data_path=cfg.DATA_PATH, mode="test", modal=cfg.MODAL, feature_fps=cfg.FEATS_FPS,
                                 num_segments=cfg.NUM_SEGMENTS, supervision="weak", class_dict=cfg.CLASS_DICT,
                                 seed=cfg.SEED, sampling="uniform")
    test_loader = DataLoader(test_set, batch_size=1, shuffle=False, num_workers=0)
    test_info: dict[str, list] = {"step": [], "test_acc": [], "average_mAP": []}
    test_info.update({f"mAP@{t:.1f}": [] for t in cfg.TIOU_THRESH})
    own: dict[str, Any] = {}
    try:
        pieces.test_all(net, cfg, test_loader, test_info, total)
        own = {"name": "CoLA ANETdetection (main_cola.test_all), mean over tIoU 0.1:0.7",
               "average_mAP": float(test_info["average_mAP"][-1]), "test_acc": float(test_info["test_acc"][-1]),
               **{key: float(values[-1]) for key, values in test_info.items() if key.startswith("mAP@")}}
    except Exception as error:  # the upstream evaluator has known crash cases (docs/baselines.md)
        own = {"name": "CoLA test_all", "failed": f"{type(error).__name__}: {error}"}
        print(f"[ftcl-upstream] the upstream's own evaluation failed: {own['failed']}")

    def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        video_scores, _, actionness, cas = net(features)
        # As test_all reads them: min-max normalised CAS and actionness, softmax video scores.
        return minmax_over_time(cas[0]), video_scores[0], minmax_over_time(actionness[0][:, None])[:, 0]

    return {"model": UpstreamModel("cola", net, run), "history": history, "upstream_evaluation": own,
            "ftcl_steps": len(attachment.history)}


# ---------------------------------------------------------------------------------------------------------------
# W-TALC


def _wtalc_eval_annotations(source: Path, copy: Path) -> str:
    """The annotation folder W-TALC's evaluator reads; a completed copy when files it needs are missing.

    Its ``detectionMAP`` also opens ``Ambiguous_test.txt`` and indexes ``duration.npy`` as ``(N, 1)``, as in the
    upstream's own THUMOS14 files; datasets written by other tools may lack the first or store ``(N,)``.
    """
    from ftcl_plugin.data import load_npy

    duration = load_npy(source / "duration.npy", kind="W-TALC file")
    if (source / "Ambiguous_test.txt").is_file() and duration.ndim == 2:
        return str(source) + "/"
    copy.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    if not (copy / "Ambiguous_test.txt").is_file():
        (copy / "Ambiguous_test.txt").write_text("")
    if duration.ndim == 1:
        np.save(copy / "duration.npy", duration[:, None])
    return str(copy) + "/"


def _drive_wtalc(up: Any, patch: Any, ctx: Any, config: dict[str, Any], out: Path, *, seed: int) -> dict[str, Any]:
    pieces = patch.load(up)
    dataset_name = str(config.get("upstream", {}).get("dataset_name", "Thumos14reduced"))
    batch_size = int(config.get("optim", {}).get("batch_size", 10))
    up_args = patch.parse_args(
        pieces, ["--dataset-name", dataset_name, "--batch-size", str(batch_size), "--seed", str(seed)],
        feature_size=ctx.feature_dim, num_class=len(ctx.class_names),
    )
    torch.manual_seed(up_args.seed)  # as main.py
    _seed_everything(seed)
    with up.cwd(ctx.root):
        # video_dataset.Dataset reads '<name>-I3D-JOINTFeatures.npy' and '<name>-Annotations/' relative to the cwd.
        dataset = pieces.Dataset(up_args)
    dataset.path_to_annotations = str(Path(ctx.root) / f"{dataset_name}-Annotations") + "/"
    model = pieces.Model(dataset.feature_size, dataset.num_class).to(ctx.device)
    _init_from(model, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=up_args.lr, weight_decay=0.0005)  # as main.py
    ftcl = _make_ftcl(config, int(dataset.feature_size), ctx.device)
    attachment = patch.attach(model, optimizer, pieces.train_module, ftcl, casl_weight=1.0 - up_args.Lambda)
    per_epoch = max(1, math.ceil(len(dataset.trainidx) / batch_size))
    epochs = int(config["train"].get("epochs", 1))
    cap = int(config["train"].get("iterations", 0) or 0)
    total = min(cap, epochs * per_epoch) if cap else epochs * per_epoch
    logger = _RecordingWriter()
    history: list[dict[str, Any]] = []
    marks, before = logger.marks(), 0
    for itr in range(total):
        pieces.train(itr, dataset, up_args, model, optimizer, logger, ctx.device)  # the upstream iteration
        step = itr + 1
        if step % per_epoch == 0 or step == total:
            history.append(_epoch_row(math.ceil(step / per_epoch), step, logger.means_since(marks),
                                      attachment.history[before:]))
            marks, before = logger.marks(), len(attachment.history)
    attachment.remove()
    save_dir = out / "upstream"
    save_dir.mkdir(exist_ok=True)
    dataset.path_to_annotations = _wtalc_eval_annotations(Path(ctx.root) / f"{dataset_name}-Annotations",
                                                          save_dir / f"{dataset_name}-Annotations")
    own: dict[str, Any]
    try:
        with up.cwd(save_dir):  # test() appends '<name>-results.log' to the cwd
            pieces.test(total, dataset, up_args, model, logger, ctx.device)
        line = (save_dir / f"{dataset_name}-results.log").read_text().strip().splitlines()[-1].split()
        own = {"name": "W-TALC detectionMAP (test.test), tIoU 0.1:0.5, in %",
               "mAP": dict(zip(["0.1", "0.2", "0.3", "0.4", "0.5"], map(float, line[1:6]))),
               "cmap": float(line[6])}
    except Exception as error:
        own = {"name": "W-TALC test.test", "failed": f"{type(error).__name__}: {error}"}
        print(f"[ftcl-upstream] the upstream's own evaluation failed: {own['failed']}")
    from integrations.wtalc.model import detection_signals

    def run(features: Tensor) -> tuple[Tensor, Tensor, None]:
        _, logits = model(features, is_training=False)
        # detectionMAP.py's gated logits and test.py's classification score, as the clean-room W-TALC returns them.
        cas, scores = detection_signals(logits[0])
        return cas, scores, None

    return {"model": UpstreamModel("wtalc", model, run, {"upsample": 1}), "history": history,
            "upstream_evaluation": own, "ftcl_steps": len(attachment.history)}


# ---------------------------------------------------------------------------------------------------------------
# STPN


def _pad_collate(batch: list[Any]) -> tuple[Tensor, Tensor, Tensor]:
    # The reproduction trains one video per batch; FTCL needs pairs, so videos are zero-padded to the longest.
    lengths = torch.tensor([len(item[0]) for item in batch], dtype=torch.int64)
    width = int(lengths.max())
    features = torch.zeros(len(batch), width, batch[0][0].shape[-1])
    for i, item in enumerate(batch):
        features[i, : len(item[0])] = torch.from_numpy(np.asarray(item[0], dtype=np.float32).reshape(len(item[0]), -1))
    labels = torch.from_numpy(np.stack([np.asarray(item[1], dtype=np.float32) for item in batch]))
    return features, labels, lengths


def _drive_stpn(up: Any, patch: Any, ctx: Any, config: dict[str, Any], out: Path, *, seed: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from ftcl_plugin.data import ClassPairSampler, open_dataset

    stream = str(config.get("upstream", {}).get("stream", "rgb"))
    if stream not in ("rgb", "flow"):
        raise ValueError(f"upstream.stream must be 'rgb' or 'flow', but got {stream!r}.")
    pieces = patch.load(up, mode=stream)
    _seed_everything(seed)
    # The reproduction reads per-window .npy files listed in a JSON split; write that layout from our dataset.
    train_full = open_dataset(ctx.root, "train", layout="acmnet", num_segments=None, sampling="full")
    data_dir = out / "stpn_data"
    patch.write_layout(data_dir, train_full.ground_truth, list(ctx.class_names),
                       {"train": [(train_full.videos[i], train_full[i].features.numpy())
                                  for i in range(len(train_full))]}, streams=(stream,))
    dataset = pieces.Thumos(str(data_dir / "thumos14_val.json"), str(data_dir / "features"), 1, stream, True)
    # The sampler needs every video's labels; Thumos keeps (video, class-id pair, frames, gt) per entry in .data,
    # from which its __getitem__ builds the multi-hot label (reading them there would load every feature file).
    labels = torch.zeros(len(dataset), patch.NUM_CLASSES)
    for i, entry in enumerate(dataset.data):
        for class_id in entry[1]:
            if class_id > 0:
                labels[i, int(class_id) - 1] = 1.0
    batch_size = int(config.get("optim", {}).get("batch_size", 6))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_sampler=ClassPairSampler(labels, batch_size, generator=generator),
                        collate_fn=_pad_collate, num_workers=0)
    model = pieces.get_model(0, patch.NUM_CLASSES)  # calls .cuda(); the session sends it to the chosen device
    _init_from(model, config)
    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # adjust_learning_rate sets it every epoch anyway
    ftcl = _make_ftcl(config, int(model.fc1.out_features), ctx.device)
    attachment = patch.attach(model, optimizer, criterion, ftcl)
    epochs = int(config["train"].get("epochs", 1))
    cap = int(config["train"].get("iterations", 0) or 0)
    history: list[dict[str, Any]] = []
    step = 0
    model.train(True)
    for epoch in range(epochs):
        if cap and step >= cap:
            break
        pieces.adjust_learning_rate(optimizer, epoch)  # the upstream schedule: 1e-4, x0.1 every 80 epochs
        losses, before = [], len(attachment.history)
        for features, batch_labels, lengths in loader:
            if cap and step >= cap:
                break
            attachment.lengths = lengths
            # train_model.train_step's body without its `loss.data[0]` (an error since PyTorch 0.5).
            optimizer.zero_grad()
            _, loss = pieces.run_network(model, (features, batch_labels, None), 0, criterion)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(_epoch_row(epoch + 1, step, {"train_loss": float(np.mean(losses)) if losses else math.nan},
                                  attachment.history[before:]))
        print(f"epoch {epoch + 1}/{epochs}  {stream} loss {history[-1]['train_loss']:.4f}  steps {step}")
    attachment.remove()
    # The per-window copy is large (one file per snippet) and derived from --data; drop it after training.
    shutil.rmtree(data_dir, ignore_errors=True)
    own = {"name": "STPN reproduction evaluation",
           "failed": "not run: its test path reads hard-coded absolute files of the author's machine and scores "
                     "with the MATLAB TH14 kit"}
    half = ctx.feature_dim // 2
    offset = 0 if stream == "rgb" else half
    num_classes = len(ctx.class_names)

    threshold = float(config.get("localization", {}).get("class_threshold", 0.1))

    def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        part = features[0, :, offset:offset + half]
        padded = features.new_zeros(part.shape[0], patch.STREAM_DIM)
        padded[:, :half] = part
        scores, attention = model(padded[None])
        tcam = (padded @ model.fc3.weight.t())[:, :num_classes]  # the T-CAM, no bias (train_model.returnCAM)
        scores = scores[0, :num_classes]
        # The clean-room STPN's signals for one stream: runs where psi >= 0.05, scored by lambda * T-CAM.
        psi = attention[0] * torch.sigmoid(tcam) * (scores > threshold)
        return attention[0] * tcam, scores, psi

    return {"model": UpstreamModel("stpn", model, run), "history": history, "upstream_evaluation": own,
            "ftcl_steps": len(attachment.history), "stream": stream}


_DRIVERS = {"acmnet": _drive_acmnet, "cola": _drive_cola, "wtalc": _drive_wtalc, "stpn": _drive_stpn}
