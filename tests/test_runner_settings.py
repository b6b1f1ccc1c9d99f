"""The runner's typed settings: every shipped config reads into them with its own values, a missing key takes the
one default written in ``settings.py``, and a bad config is refused by key."""

from __future__ import annotations

import dataclasses

import pytest

from integrations.common.config import INTEGRATIONS_ROOT, check_override, known_keys, load_config
from integrations.common.settings import SECTIONS, RunSettings, check_settings, default_values

BASELINES = ("acmnet", "cola", "wtalc", "stpn")


@pytest.mark.parametrize("builtin_data", [False, True])
@pytest.mark.parametrize("dataset", ["thumos14", "activitynet"])
@pytest.mark.parametrize("name", BASELINES)
def test_every_shipped_config_reads_with_its_own_values(name: str, dataset: str, builtin_data: bool) -> None:
    config = load_config(name, dataset, builtin_data=builtin_data)
    settings = check_settings(config)
    for table, section in SECTIONS.items():
        for key, value in config.get(table, {}).items():
            got = getattr(getattr(settings, table), key)
            assert got == (tuple(value) if isinstance(value, list) else value), f"{table}.{key}"
        assert dataclasses.is_dataclass(getattr(settings, table)) and section.__dataclass_params__.frozen
    assert dict(settings.model) == config["model"] and dict(settings.localization) == config["localization"]
    assert settings.ftcl.enabled is config["ftcl"]["enabled"]
    assert dict(settings.ftcl.options) == {k: v for k, v in config["ftcl"].items() if k != "enabled"}


def test_absent_keys_take_the_defaults_of_settings_py() -> None:
    # Values written in settings.py (the only place they live); ACM-Net's THUMOS14 config sets none of these.
    settings = RunSettings.from_config(load_config("acmnet", "thumos14", builtin_data=False))
    assert (settings.data.builtin, settings.data.size, settings.data.difficulty) == ("thumos14-like", "small",
                                                                                     "standard")
    assert (settings.data.similar_pairs, settings.data.skip_missing) == (3, False)
    assert (settings.optim.betas, settings.optim.lr_decay_at, settings.optim.lr_decay_factor) == ((0.9, 0.999), (),
                                                                                                  0.1)
    assert (settings.upstream.dataset_name, settings.upstream.stream) == ("Thumos14reduced", "rgb")
    assert settings.meta.data == "" and settings.meta.init_from is None
    defaults = default_values()
    assert defaults["data.similar_pairs"] == 3 and defaults["optim.betas"] == [0.9, 0.999]
    assert "optim.lr" not in defaults and "meta.data" not in defaults  # required keys, and the command line's


def test_settings_are_frozen_and_read_only() -> None:
    settings = RunSettings.from_config({"optim": {"lr": 1e-3, "batch_size": 4}, "train": {"epochs": 1},
                                        "model": {"dropout": 0.5}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.model["dropout"] = 0.1  # type: ignore[index]


def test_integers_are_read_as_floats_and_lists_as_tuples() -> None:
    settings = RunSettings.from_config({"optim": {"lr": 1, "batch_size": 4, "lr_decay_at": [1, 0.5]},
                                        "train": {"epochs": 1}, "data": {"input_scale": 2}})
    assert settings.optim.lr == 1.0 and isinstance(settings.optim.lr, float)
    assert settings.optim.lr_decay_at == (1.0, 0.5) and settings.data.input_scale == 2.0


@pytest.mark.parametrize(("config", "message"), [
    ({"optim": {"batch_size": 4}, "train": {"epochs": 1}}, "optim.lr is missing; every config must set it."),
    ({"optim": {"lr": 0.1, "batch_size": 4}, "train": {"epochs": 1}, "optm": {}},
     "unknown config table(s) 'optm'; the tables are"),
    ({"optim": {"lr": 0.1, "batch_size": 4, "lrr": 1}, "train": {"epochs": 1}},
     "unknown config key(s) optim.lrr; [optim] has lr, batch_size, weight_decay"),
    ({"optim": {"lr": "fast", "batch_size": 4}, "train": {"epochs": 1}}, "optim.lr must be a number, but got 'fast'."),
    ({"optim": {"lr": 0.1, "batch_size": 4.5}, "train": {"epochs": 1}},
     "optim.batch_size must be an integer, but got 4.5."),
    ({"optim": {"lr": 0.1, "batch_size": 4}, "train": {"epochs": 1}, "data": {"sampler": "pairs"}},
     "data.sampler must be one of random, class_pair, similar_pairs, but got 'pairs'."),
    ({"optim": {"lr": 0.1, "batch_size": 4}, "train": {"epochs": 1}, "upstream": {"stream": "both"}},
     "upstream.stream must be one of rgb, flow, but got 'both'."),
    ({"optim": {"lr": 0.1, "batch_size": 4}, "train": {"epochs": 1}, "ftcl": {"enabled": "yes"}},
     "ftcl.enabled must be true or false, but got 'yes'."),
    ({"optim": {"lr": 0.1, "batch_size": 4}, "train": {"epochs": 1}, "localization": {"nms": "nope"}},
     "the [localization] settings are not valid: `nms` must be one of"),
])
def test_a_bad_config_is_refused_by_key(config: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        check_settings(config)
    assert message in str(error.value)


def test_set_accepts_every_runner_key_for_every_baseline() -> None:
    # Keys no ACM-Net TOML lists but the runner reads: --set takes them, typed by their default.
    known = known_keys(load_config("acmnet", "thumos14", builtin_data=True))
    assert check_override(known, ["optim", "lr_decay_at"], [0.5]) == [0.5]
    assert check_override(known, ["data", "sampler"], "similar_pairs") == "similar_pairs"
    assert check_override(known, ["data", "similar_pairs"], 2) == 2
    with pytest.raises(ValueError, match="data.similar_pairs must be an integer"):
        check_override(known, ["data", "similar_pairs"], 2.5)
    assert {path.parent.name for path in INTEGRATIONS_ROOT.glob("*/configs")} == set(BASELINES)


@pytest.mark.parametrize("name", ["acmnet", "cola", "wtalc", "stpn"])
def test_activitynet_configs_give_ftcl_the_papers_top_10_lcs_snippets(name: str) -> None:
    # paper Sec. 4.1: LCS on the top-J snippets, J = 30 on THUMOS14 and 10 on ActivityNet
    from integrations.common.context import build_ftcl

    for dataset, k in (("activitynet", 10), ("thumos14", 30)):
        settings = RunSettings.from_config(load_config(name, dataset, builtin_data=True))
        assert build_ftcl(settings.ftcl, 8).lcs_selector.k == k
