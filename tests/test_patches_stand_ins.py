"""The no-op stand-ins a session installs for missing logging, progress and table packages: each provides what the
four upstreams call, and nothing they call fails or writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from patches._stand_ins import STAND_INS  # noqa: E402


def _build(name: str) -> dict:
    return STAND_INS[name]()


def test_every_stand_in_is_a_findable_module_of_its_name() -> None:
    for name, factory in STAND_INS.items():
        modules = factory()
        assert name in modules
        for module_name, module in modules.items():
            assert module.__name__ == module_name and module.__spec__.name == module_name


def test_loggers_accept_what_the_upstreams_log() -> None:
    wandb = _build("wandb")["wandb"]
    run = wandb.init(project="x", config={"lr": 1})
    assert wandb.log({"loss": 1.0}) is None and wandb.finish() is None
    assert run.summary.update({"a": 1}) is run  # any attribute, any call
    logger = _build("tensorboard_logger")["tensorboard_logger"]
    assert logger.log_value("loss", 1.0, 3) is None and logger.configure("runs/x") is None
    for name in ("tensorboardX", "torch.utils.tensorboard"):
        writer = _build(name)[name].SummaryWriter("runs/x")
        with writer as inside:
            assert inside.add_scalar("loss", 1.0, 0) is inside


def test_progress_table_and_dict_helpers_behave_like_the_packages() -> None:
    tqdm = _build("tqdm")["tqdm"]
    assert list(tqdm.tqdm([1, 2, 3], desc="x")) == [1, 2, 3] and list(tqdm.trange(2, 5)) == [2, 3, 4]
    config = _build("easydict")["easydict"].EasyDict({"LR": 0.1})
    config.SEED = 3
    assert (config.LR, config["SEED"]) == (0.1, 3)
    with pytest.raises(AttributeError):
        _ = config.MISSING
    table = _build("terminaltables")["terminaltables"].AsciiTable([["mAP", "0.1"], ["x", "12.5"]], "title")
    # Cells centred in columns as wide as their longest cell: "mAP" (3) and "12.5" (4).
    assert table.table == "title\n| mAP | 0.1  |\n|  x  | 12.5 |"


def test_joblib_runs_tasks_in_order_in_this_process_and_sklearn_refuses_clearly() -> None:
    joblib = _build("joblib")["joblib"]
    assert joblib.Parallel(n_jobs=8)(joblib.delayed(pow)(2, k) for k in range(4)) == [1, 2, 4, 8]
    modules = _build("sklearn")
    assert modules["sklearn"].metrics is modules["sklearn.metrics"]
    with pytest.raises(ImportError, match="scikit-learn is not installed"):
        modules["sklearn.metrics"].average_precision_score([1], [1.0])


def test_placeholders_hand_out_no_ops_but_no_dunders() -> None:
    h5py = _build("h5py")["h5py"]
    handle = h5py.File("x.h5", "r")  # a no-op object: any attribute, any call, nothing opened
    assert handle.close() is handle and not Path("x.h5").exists()
    with pytest.raises(AttributeError):
        _ = h5py.__version__  # dunder lookups fail as on a module, so introspection is not fooled
