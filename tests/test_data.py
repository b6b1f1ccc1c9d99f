"""Loaders, records, samplers, writers/converters, bad inputs, ``check`` and the ``ftcl-data`` CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from ftcl_plugin.data import (
    AcmNetFeatures,
    ColaFeatures,
    VideoRecord,
    WtalcFeatures,
    check_dataset,
    collate_videos,
    convert,
    generate,
    open_dataset,
    sample_indices,
    write_dataset,
)
from ftcl_plugin.data.check import format_report, ground_truth_statistics
from ftcl_plugin.data.cli import detect_layout, main
from tests.tiny_dataset import TINY


def all_features(dataset) -> dict[str, np.ndarray]:
    return {v: dataset.read_features(i) for i, v in enumerate(dataset.videos)}


# ------------------------------------------------------------------------------------------------ records


def test_collate_pads_without_truncation():
    records = [VideoRecord(torch.full((n, 3), float(n)), torch.tensor([1.0, 0.0]), f"v{n}", n + 5, n * 0.64)
               for n in (2, 5, 1)]
    batch = collate_videos(records)
    assert batch.features.shape == (3, 5, 3)
    assert batch.lengths.tolist() == [2, 5, 1]
    assert batch.num_snippets.tolist() == [7, 10, 6]
    assert batch.durations.dtype == torch.float64 and batch.lengths.dtype == torch.int64
    for i, n in enumerate((2, 5, 1)):
        assert torch.equal(batch.features[i, :n], records[i].features)
        assert float(batch.features[i, n:].abs().sum()) == 0.0
    assert batch.videos == ["v2", "v5", "v1"]


def test_collate_errors():
    with pytest.raises(ValueError, match="at least one VideoRecord"):
        collate_videos([])
    a = VideoRecord(torch.ones(2, 3), torch.ones(2), "a", 2, 1.0)
    with pytest.raises(ValueError, match="same feature dim D"):
        collate_videos([a, VideoRecord(torch.ones(2, 4), torch.ones(2), "b", 2, 1.0)])
    with pytest.raises(ValueError, match="same number of classes C"):
        collate_videos([a, VideoRecord(torch.ones(2, 3), torch.ones(3), "b", 2, 1.0)])


# ------------------------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("length,segments", [(1000, 750), (751, 750), (37, 10), (10, 10)])
def test_random_sampling_is_stratified_and_covers_the_video(length, segments):
    edges = (np.arange(segments + 1) * length) // segments
    seen = np.zeros(length, dtype=bool)
    for seed in range(30):
        idx = sample_indices(length, segments, "random", np.random.default_rng(seed))
        assert idx.shape == (segments,) and idx.dtype == np.int64
        assert (np.diff(idx) >= 0).all()
        # every stratum holds its own sample: the first bins start the video, the last reaches its end zone
        assert (idx[:-1] >= edges[:-2]).all() and (idx[:-1] <= edges[1:-1]).all()
        assert edges[-2] <= idx[-1] <= length - 1
        seen[idx] = True
    assert seen.all()


def test_random_sampling_stretches_short_videos_with_repeats():
    seen = set()
    for seed in range(20):
        idx = sample_indices(7, 30, "random", np.random.default_rng(seed))
        assert idx.shape == (30,) and (np.diff(idx) >= 0).all()
        assert idx.min() >= 0 and idx.max() <= 6
        seen.update(idx.tolist())
    assert seen == set(range(7))


def test_random_sampling_is_reproducible_by_seed():
    a = sample_indices(500, 100, "random", np.random.default_rng(3))
    b = sample_indices(500, 100, "random", np.random.default_rng(3))
    c = sample_indices(500, 100, "random", np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_uniform_and_full_sampling():
    assert np.array_equal(sample_indices(1000, 750, "uniform"), (np.arange(750) * 1000) // 750)
    assert np.array_equal(sample_indices(1000, 750, "uniform"), sample_indices(1000, 750, "uniform"))
    assert np.array_equal(sample_indices(300, 750, "uniform"), np.arange(300))
    assert np.array_equal(sample_indices(300, 20, "full"), np.arange(300))
    assert np.array_equal(sample_indices(300, None, "random"), np.arange(300))


def test_sampling_errors():
    with pytest.raises(ValueError, match="`generator` must be a numpy.random.Generator"):
        sample_indices(10, 5, "random")
    with pytest.raises(ValueError, match="`sampling` must be one of"):
        sample_indices(10, 5, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`length` must be >= 1"):
        sample_indices(0, 5, "uniform")


# ------------------------------------------------------------------------------------------------ loaders


def test_acmnet_loader_records(tiny):
    gt = json.loads((tiny / "gt.json").read_text())
    train = AcmNetFeatures(tiny, "train", num_segments=32, seed=0)
    test = AcmNetFeatures(tiny, "test")
    assert train.subset == "validation" and test.subset == "test"
    assert train.class_names == sorted({a["label"] for e in gt["database"].values() for a in e["annotations"]})
    assert train.class_names == test.class_names and train.feature_dim == 16
    assert train.videos == (tiny / "split_train.txt").read_text().split()
    assert train.labels.shape == (6, len(train.class_names)) and train.labels.dtype == torch.float32
    record = train[0]
    assert record.features.shape == (32, 16) and record.features.dtype == torch.float32
    assert record.num_snippets == int(train.num_snippets[0])
    assert record.duration == pytest.approx(gt["database"][record.video]["duration"])
    labels = {a["label"] for a in gt["database"][record.video]["annotations"]}
    assert {train.class_names[c] for c in torch.nonzero(record.label).flatten().tolist()} == labels
    # test split: uniform sampling keeps full length when L <= T
    assert test[1].features.shape[0] == test.num_snippets[1]
    stored = np.load(tiny / "test" / f"{test.videos[1]}.npy")  # the file itself, read by numpy
    assert torch.equal(test[1].features, torch.from_numpy(stored)) and torch.equal(test[1].features, test[1].features)
    assert test.ground_truth["database"].keys() == gt["database"].keys()


def test_sampling_seed_and_epochs(tiny):
    a = AcmNetFeatures(tiny, "train", num_segments=64, seed=5)
    b = AcmNetFeatures(tiny, "train", num_segments=64, seed=5)
    first = [a[i].features for i in range(len(a))]
    assert all(torch.equal(x, b[i].features) for i, x in enumerate(first))
    # a second draw of the same video differs (stratified random), and set_epoch restarts reproducibly
    assert not all(torch.equal(x, a[i].features) for i, x in enumerate(first))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i].features) for i, x in enumerate(first))
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i].features) for i, x in enumerate(first))
    full = AcmNetFeatures(tiny, "train", num_segments=None)
    assert full[2].features.shape[0] == full.num_snippets[2]


def test_round_trip_every_layout(tmp_path, tiny):
    reference = {split: AcmNetFeatures(tiny, split, num_segments=None) for split in ("train", "test")}
    for layout, cls in (("cola", ColaFeatures), ("wtalc", WtalcFeatures)):
        root = generate(tmp_path / layout, layout=layout, **TINY)
        for split, ref in reference.items():
            dataset = cls(root, split, num_segments=None)
            assert dataset.videos == ref.videos and dataset.class_names == ref.class_names
            assert dataset.subset == ref.subset
            assert torch.equal(dataset.labels, ref.labels)
            assert np.array_equal(dataset.durations, ref.durations)
            for (video, x), y in zip(all_features(dataset).items(), all_features(ref).values()):
                assert np.array_equal(x, y), (layout, video)
            assert open_dataset(root, split, layout=layout, num_segments=None).videos == ref.videos


def test_wtalc_files_match_the_upstream_layout(tmp_path, tiny):
    # W-TALC's own files store duration as (N, 1) and ship Ambiguous_test.txt; its evaluator needs both.
    root = generate(tmp_path / "w", layout="wtalc", **TINY)
    annotations = root / "Thumos14reduced-Annotations"
    duration = np.load(annotations / "duration.npy")
    assert duration.ndim == 2 and duration.shape[1] == 1
    assert (annotations / "Ambiguous_test.txt").is_file()
    expected = WtalcFeatures(root, "test", num_segments=None).durations
    np.save(annotations / "duration.npy", duration[:, 0])  # a flat (N,) array is read the same way
    assert np.array_equal(WtalcFeatures(root, "test", num_segments=None).durations, expected)


def test_converters_round_trip(tmp_path, tiny):
    cola = convert(tiny, tmp_path / "cola", source_layout="acmnet", destination_layout="cola")
    wtalc = convert(cola, tmp_path / "wtalc", source_layout="cola", destination_layout="wtalc")
    back = convert(wtalc, tmp_path / "back", source_layout="wtalc", destination_layout="acmnet")
    assert json.loads((back / "gt.json").read_text())["database"] == \
        json.loads((tiny / "gt.json").read_text())["database"]
    for split in ("train", "test"):
        assert (back / f"split_{split}.txt").read_text() == (tiny / f"split_{split}.txt").read_text()
        a, b = AcmNetFeatures(tiny, split, num_segments=None), AcmNetFeatures(back, split, num_segments=None)
        for x, y in zip(all_features(a).values(), all_features(b).values()):
            assert np.array_equal(x, y)
    with pytest.raises(ValueError, match="`destination` must differ"):
        convert(tiny, tiny, source_layout="acmnet", destination_layout="cola")


def test_custom_dataset_path(tmp_path):
    """The documented custom path: a gt.json plus one .npy per video is enough."""
    gt = {"database": {
        "clip_a": {"subset": "validation", "duration": 6.4, "annotations": [{"segment": [1.2, 3.3], "label": "jump"}]},
        "clip_b": {"subset": "validation", "duration": 3.2, "annotations": [{"segment": [0.1, 2.0], "label": "run"}]},
        "clip_c": {"subset": "test", "duration": 6.4, "annotations": [{"segment": [2.0, 4.0], "label": "run"}]},
    }}
    lengths = {"clip_a": 10, "clip_b": 5, "clip_c": 10}
    rng = np.random.default_rng(0)
    root = write_dataset(tmp_path / "mine", "acmnet", gt, {"train": ["clip_a", "clip_b"], "test": ["clip_c"]},
                         lambda split, video: rng.standard_normal((lengths[video], 6)).astype(np.float32))
    train = AcmNetFeatures(root, "train", num_segments=8, seed=0)
    assert train.class_names == ["jump", "run"]
    assert train.labels.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert check_dataset(root)["ok"]


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_feature_file_raises_or_skips(tiny_copy):
    victim = (tiny_copy / "split_train.txt").read_text().split()[1]
    (tiny_copy / "train" / f"{victim}.npy").unlink()
    with pytest.raises(ValueError, match=rf"Feature file .*{victim}\.npy does not exist.*skip_missing=True"):
        AcmNetFeatures(tiny_copy, "train")
    with pytest.warns(UserWarning, match=f"Skipping video '{victim}'"):
        dataset = AcmNetFeatures(tiny_copy, "train", skip_missing=True)
    assert victim not in dataset.videos and len(dataset) == 5 and dataset.labels.shape[0] == 5


def test_corrupt_npy_names_the_file(tiny_copy):
    victim = (tiny_copy / "split_test.txt").read_text().split()[0]
    (tiny_copy / "test" / f"{victim}.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    with pytest.raises(ValueError, match=rf"Feature file .*{victim}\.npy is not a readable \.npy array"):
        AcmNetFeatures(tiny_copy, "test")
    report = check_dataset(tiny_copy)
    assert not report["ok"] and any(victim in e and "not a readable" in e for e in report["errors"])


@pytest.mark.parametrize("array,message", [
    (np.ones(5, dtype=np.float32), r"must have shape \(T, D\)"),
    (np.ones((5, 16), dtype=np.int64), "must hold floating-point features"),
    (np.ones((5, 7), dtype=np.float32), "D=7"),
])
def test_wrong_shape_or_dtype(tiny_copy, array, message):
    victim = (tiny_copy / "split_train.txt").read_text().split()[2]
    np.save(tiny_copy / "train" / f"{victim}.npy", array)
    with pytest.raises(ValueError, match=message) as info:
        AcmNetFeatures(tiny_copy, "train")
    assert victim in str(info.value)


def test_nan_features_raise_on_read(tiny_copy):
    victim = (tiny_copy / "split_train.txt").read_text().split()[0]
    path = tiny_copy / "train" / f"{victim}.npy"
    array = np.load(path)
    array[3, 1] = np.nan
    np.save(path, array)
    dataset = AcmNetFeatures(tiny_copy, "train", seed=0)
    with pytest.raises(ValueError, match=rf"{victim}\.npy contains NaN or inf \(first bad snippet 3"):
        dataset[0]
    assert any("NaN" in e for e in check_dataset(tiny_copy)["errors"])


def test_split_video_absent_from_gt(tiny_copy):
    with open(tiny_copy / "split_test.txt", "a") as handle:
        handle.write("video_nowhere\n")
    with pytest.raises(ValueError, match="Video 'video_nowhere' of the test split .* is not in the ground truth"):
        AcmNetFeatures(tiny_copy, "test")


def test_empty_split_and_bad_gt(tiny_copy):
    (tiny_copy / "split_test.txt").write_text("\n")
    with pytest.raises(ValueError, match="The test split of .* is empty"):
        AcmNetFeatures(tiny_copy, "test")
    (tiny_copy / "gt.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"gt\.json is not valid JSON"):
        AcmNetFeatures(tiny_copy, "train")
    (tiny_copy / "gt.json").write_text(json.dumps({"database": {"x": {"subset": "test", "annotations": []}}}))
    with pytest.raises(ValueError, match="video 'x' must have a positive 'duration'"):
        AcmNetFeatures(tiny_copy, "train")
    (tiny_copy / "gt.json").unlink()
    with pytest.raises(ValueError, match=r"gt\.json does not exist"):
        AcmNetFeatures(tiny_copy, "train")


def test_argument_errors(tiny):
    with pytest.raises(ValueError, match="`split` must be one of"):
        AcmNetFeatures(tiny, "val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`layout` must be one of"):
        open_dataset(tiny, "train", layout="mmaction")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not a directory"):
        AcmNetFeatures(tiny / "nope", "train")
    with pytest.raises(IndexError, match="out of range"):
        AcmNetFeatures(tiny, "test")[99]


def test_cola_stream_length_mismatch(tmp_path):
    root = generate(tmp_path / "cola", layout="cola", **TINY)
    video = (root / "split_train.txt").read_text().split()[0]
    flow = root / "features" / "train" / "flow" / f"{video}.npy"
    np.save(flow, np.load(flow)[:-1])
    with pytest.raises(ValueError, match=f"Video '{video}' has .* RGB snippets .* flow snippets"):
        ColaFeatures(root, "train")


def test_wtalc_errors(tmp_path):
    root = generate(tmp_path / "w", layout="wtalc", **TINY)
    with pytest.raises(ValueError, match="Other-I3D-JOINTFeatures.npy do not exist"):
        WtalcFeatures(root, "train", dataset_name="Other")
    features = np.load(root / "Thumos14reduced-I3D-JOINTFeatures.npy", allow_pickle=True)
    features[0] = features[0].astype(np.int32)
    np.save(root / "Thumos14reduced-I3D-JOINTFeatures.npy", features, allow_pickle=True)
    with pytest.raises(ValueError, match=r"Entry 0 \('video_validation_0000001'\) .* must be a \(T, D\) floating"):
        WtalcFeatures(root, "train")
    (root / "Thumos14reduced-Annotations" / "segments.npy").unlink()
    with pytest.raises(ValueError, match=r"segments\.npy does not exist"):
        WtalcFeatures(root, "train")


# ------------------------------------------------------------------------------------------------ check + CLI


def test_check_reports_problems_without_raising(tiny_copy):
    clean = check_dataset(tiny_copy)
    assert clean["ok"] and clean["errors"] == [] and clean["splits"]["test"]["videos"] == 4
    assert clean["statistics"]["instances_per_video"]["n"] == 10
    train = (tiny_copy / "split_train.txt").read_text().split()
    (tiny_copy / "train" / f"{train[0]}.npy").unlink()
    np.save(tiny_copy / "train" / f"{train[1]}.npy", np.ones((500, 16), np.float32))  # wrong time base
    report = check_dataset(tiny_copy)
    assert not report["ok"]
    assert any(train[0] in e and "does not exist" in e for e in report["errors"])
    assert any(train[1] in w and "500 snippets" in w for w in report["warnings"])
    assert "PROBLEMS FOUND" in format_report(report)


def test_statistics_by_hand_with_segments_past_the_duration():
    # A 10 s video: [1, 3] and [2, 4] overlap, [9, 12] ends past the duration, [11, 13] starts past it (THUMOS14
    # has such instances where a duration was written for the wrong frame rate). Instance lengths as annotated:
    # 2, 2, 3, 2 s (mean 2.25 s = 3.515625 snippets of 0.64 s); coverage: [1, 4] and [9, 10] inside, 4 / 10.
    gt = {"database": {"a": {"subset": "test", "duration": 10.0, "annotations": [
        {"segment": [9.0, 12.0], "label": "x"}, {"segment": [1.0, 3.0], "label": "x"},
        {"segment": [11.0, 13.0], "label": "y"}, {"segment": [2.0, 4.0], "label": "x"}]}}}
    stats = ground_truth_statistics(gt, ["a"])
    assert stats["instance_duration_s"]["mean"] == 2.25 and stats["instance_duration_s"]["min"] == 2.0
    assert stats["instance_duration_snippets"]["mean"] == pytest.approx(3.5156, abs=1e-4)  # rounded to 4 digits
    assert stats["action_coverage_fraction"]["mean"] == 0.4
    assert (stats["instances_per_video"]["mean"], stats["classes_per_video"]["mean"]) == (4, 2)


def test_cli_synth_convert_check(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", "--out", str(out), "--num-train", "4", "--num-test", "3", "--feature-dim", "8",
                 "--layout", "cola"]) == 0
    assert (out / "features" / "test" / "flow").is_dir()
    assert main(["convert", str(out), str(tmp_path / "w"), "--from", "cola", "--to", "wtalc"]) == 0
    assert main(["check", str(tmp_path / "w"), "--layout", "wtalc", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 2)[2])
    assert report["ok"] and report["splits"]["train"]["videos"] == 4
    assert main(["synth", "--out", str(out)]) == 1
    assert "already holds a dataset" in capsys.readouterr().err
    (out / "split_train.txt").write_text("video_nowhere\n")
    assert main(["check", str(out), "--layout", "cola"]) == 1
    assert "video_nowhere" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["synth"])


@pytest.mark.parametrize("layout", ["acmnet", "cola", "wtalc"])
def test_cli_check_detects_the_layout(tmp_path, capsys, layout):
    out = tmp_path / layout
    assert main(["synth", "--out", str(out), "--num-train", "3", "--num-test", "2", "--feature-dim", "8",
                 "--layout", layout, "--dataset-name", "Mine"]) == 0
    assert detect_layout(out) == (layout, "Mine" if layout == "wtalc" else None)
    capsys.readouterr()
    assert main(["check", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out} ({layout}): OK")


def test_no_warnings_on_clean_data(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = AcmNetFeatures(tiny, "train", seed=1, num_segments=20)
        collate_videos([dataset[i] for i in range(len(dataset))])
