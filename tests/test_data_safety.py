"""What data cannot do to the loaders and tools: run code (a live pickle payload in every loader path), make
layout detection guess, block ``check`` on a FIFO, mix datasets in a convert destination, hide gt.json problems."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ftcl_plugin.data import (
    AcmNetFeatures,
    WtalcFeatures,
    check_dataset,
    convert,
    generate,
    load_npy,
    open_dataset,
)
from ftcl_plugin.data.cli import detect_layout, main
from tests.pickle_payloads import unrestricted_load, write_malicious, write_object_npy
from tests.tiny_dataset import TINY

# ------------------------------------------------------------------------------------------------ no code from data


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a malicious pickle creates when it runs; every test below asserts it never appears."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle in the data ran code"


def plant_in_each_layout(tmp_path: Path, marker: Path) -> dict[str, tuple[Path, Path]]:
    """One dataset per layout with a malicious pickle where that layout keeps features; ``(root, planted file)``."""
    planted = {}
    for layout in ("acmnet", "cola"):
        root = generate(tmp_path / layout, layout=layout, **TINY)
        video = (root / "split_train.txt").read_text().split()[1]
        where = root / "train" if layout == "acmnet" else root / "features" / "train" / "flow"
        planted[layout] = (root, write_malicious(where / f"{video}.npy", marker))
    root = generate(tmp_path / "wtalc", layout="wtalc", **TINY)
    features = root / "Thumos14reduced-I3D-JOINTFeatures.npy"
    kept = list(load_npy(features, allow_objects=True))
    planted["wtalc"] = (root, write_malicious(features, marker, also=kept[:-1]))
    unrestricted_load(planted["acmnet"][1])  # the payload is live: unrestricted unpickling runs it
    assert marker.exists()
    marker.unlink()
    return planted


REFUSED = rf"holds a pickle that asks for the global `{os.system.__module__}\.system`; it was refused"


def test_a_malicious_pickle_in_any_layout_is_refused_by_every_loader_path(tmp_path, marker, capsys):
    for layout, (root, evil) in plant_in_each_layout(tmp_path, marker).items():
        expected = REFUSED if layout == "wtalc" else "holds a pickled object array, which is not read here"
        with pytest.raises(ValueError, match=rf"{re.escape(str(evil))} {expected}"):
            open_dataset(root, "train", layout=layout)
        report = check_dataset(root, layout=layout)
        assert not report["ok"] and any(str(evil) in e and re.search(expected, e) for e in report["errors"])
        for argv in (["check", str(root), "--layout", layout], ["check", str(root)]):
            assert main(argv) == 1
            assert str(evil) in capsys.readouterr().out
        for target in ("acmnet", "cola", "wtalc"):
            with pytest.raises(ValueError, match=re.escape(str(evil))):
                convert(root, tmp_path / f"{layout}-to-{target}", source_layout=layout, destination_layout=target)
            assert not (tmp_path / f"{layout}-to-{target}").exists()
        assert main(["convert", str(root), str(tmp_path / "cli-out"), "--from", layout, "--to", "acmnet"]) == 1
        assert str(evil) in capsys.readouterr().err


@pytest.mark.parametrize("name", ["segments", "labels", "videoname", "duration", "subset", "classlist"])
def test_a_malicious_wtalc_annotation_array_is_refused(tmp_path, marker, capsys, name):
    root = generate(tmp_path / "w", layout="wtalc", **TINY)
    evil = write_malicious(root / "Thumos14reduced-Annotations" / f"{name}.npy", marker, also=[["x"]])
    with pytest.raises(ValueError, match=rf"W-TALC file {re.escape(str(evil))} {REFUSED}"):
        WtalcFeatures(root, "test")
    assert any(str(evil) in e for e in check_dataset(root, layout="wtalc")["errors"])
    assert main(["check", str(root)]) == 1 and str(evil) in capsys.readouterr().out
    with pytest.raises(ValueError, match=re.escape(str(evil))):
        convert(root, tmp_path / "out", source_layout="wtalc", destination_layout="acmnet")


def test_wtalc_files_of_the_upstream_shape_still_load(tmp_path):
    # W-TALC's real annotation arrays: bytes names, an (N, 1) float duration, object arrays of Python lists.
    root = generate(tmp_path / "w", layout="wtalc", **TINY)
    annotations = root / "Thumos14reduced-Annotations"
    reference = WtalcFeatures(root, "train", num_segments=None)
    for name in ("segments", "labels", "labels_all"):
        write_object_npy(annotations / f"{name}.npy", list(load_npy(annotations / f"{name}.npy", allow_objects=True)),
                         protocol=2)
    again = WtalcFeatures(root, "train", num_segments=None)
    assert again.ground_truth == reference.ground_truth and again.videos == reference.videos


def test_layout_detection_never_follows_a_stray_wtalc_file(tiny_copy, tmp_path, marker, capsys):
    # A lone *-I3D-JOINTFeatures.npy (here a malicious one) beside a normal ACM-Net dataset is not a W-TALC
    # dataset: detection keeps ACM-Net and nothing is unpickled.
    write_malicious(tiny_copy / "Stray-I3D-JOINTFeatures.npy", marker)
    assert detect_layout(tiny_copy) == ("acmnet", None)
    assert main(["check", str(tiny_copy)]) == 0
    assert capsys.readouterr().out.startswith(f"{tiny_copy} (acmnet): OK")
    # With its annotation folder too, the files fit two layouts: refused, listing both, before reading anything.
    (tiny_copy / "Stray-Annotations").mkdir()
    write_malicious(tiny_copy / "Stray-Annotations" / "videoname.npy", marker)
    message = (r"holds files of more than one dataset layout: acmnet \(split_train.txt, split_test.txt, train, "
               r"test\); wtalc \(Stray-I3D-JOINTFeatures.npy, Stray-Annotations/\)")
    with pytest.raises(ValueError, match=message):
        detect_layout(tiny_copy)
    assert main(["check", str(tiny_copy)]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert main(["check", str(tiny_copy), "--layout", "acmnet"]) == 0
    capsys.readouterr()
    assert main(["check", str(tiny_copy), "--layout", "wtalc"]) == 1  # the user asked: refused by the reader
    assert re.search(REFUSED, capsys.readouterr().out)


def test_layout_detection_rules(tmp_path):
    (tmp_path / "a" / "features").mkdir(parents=True)
    assert detect_layout(tmp_path / "a") == ("cola", None)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "gt.json").write_text("{}")
    assert detect_layout(tmp_path / "b") == ("acmnet", None)  # nothing else fits; check names what is missing
    for name in ("One", "Two"):
        (tmp_path / "b" / f"{name}-I3D-JOINTFeatures.npy").touch()
        (tmp_path / "b" / f"{name}-Annotations").mkdir()
    with pytest.raises(ValueError, match=r"wtalc \(One-I3D.*\); wtalc \(Two-I3D"):
        detect_layout(tmp_path / "b")
    assert detect_layout(tmp_path / "b", "Two") == ("wtalc", "Two")


# ------------------------------------------------------------------------------------------------ data folders


def test_convert_refuses_a_non_empty_destination(tiny, tmp_path, capsys):
    destination = tmp_path / "dst"
    destination.mkdir()
    (destination / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"`destination` .*dst is not empty; .* overwrite=True"):
        convert(tiny, destination, source_layout="acmnet", destination_layout="cola")
    assert main(["convert", str(tiny), str(destination), "--from", "acmnet", "--to", "cola"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in destination.iterdir()) == ["mine.txt"]
    # --overwrite replaces the whole content: nothing of the previous folder is mixed into the new dataset
    assert main(["convert", str(tiny), str(destination), "--from", "acmnet", "--to", "cola", "--overwrite"]) == 0
    assert sorted(p.name for p in destination.iterdir()) == ["features", "gt.json", "split_test.txt",
                                                            "split_train.txt"]
    assert check_dataset(destination, layout="cola")["ok"]
    assert [p.name for p in tmp_path.iterdir()] == ["dst"]  # no staging or old copy left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert(tiny, empty, source_layout="acmnet", destination_layout="wtalc") == empty
    with pytest.raises(ValueError, match="contains `source`"):
        convert(tiny, tiny.parent, source_layout="acmnet", destination_layout="cola", overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        convert(tiny, tmp_path / "file", source_layout="acmnet", destination_layout="cola", overwrite=True)


def test_a_failed_convert_leaves_the_destination_untouched(tiny_copy, tmp_path):
    destination = tmp_path / "dst"
    convert(tiny_copy, destination, source_layout="acmnet", destination_layout="cola")
    before = sorted(str(p.relative_to(destination)) for p in destination.rglob("*"))
    video = (tiny_copy / "split_test.txt").read_text().split()[-1]
    array = np.load(tiny_copy / "test" / f"{video}.npy")
    array[0, 0] = np.nan  # found only when the last video is read, after most files are written
    np.save(tiny_copy / "test" / f"{video}.npy", array)
    with pytest.raises(ValueError, match="contains NaN"):
        convert(tiny_copy, destination, source_layout="acmnet", destination_layout="acmnet", overwrite=True)
    assert sorted(str(p.relative_to(destination)) for p in destination.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "dst"]


def test_check_reports_a_video_listed_twice(tiny_copy):
    train = (tiny_copy / "split_train.txt").read_text().split()
    (tiny_copy / "split_train.txt").write_text("\n".join([*train, train[2]]) + "\n")
    report = check_dataset(tiny_copy)
    assert not report["ok"]
    assert f"Video {train[2]!r} is listed 2 times in the train split" in report["errors"][0]
    assert report["splits"]["train"]["videos"] == len(train)
    with pytest.raises(ValueError, match=f"Video {train[2]!r} is listed twice in the train split"):
        AcmNetFeatures(tiny_copy, "train")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_check_reports_a_fifo_instead_of_blocking(tiny_copy, capsys):
    train = (tiny_copy / "split_train.txt").read_text().split()
    fifo = tiny_copy / "train" / f"{train[0]}.npy"
    fifo.unlink()
    os.mkfifo(fifo)
    (tiny_copy / "split_test.txt").unlink()
    os.mkfifo(tiny_copy / "split_test.txt")
    # load_npy's own test guards against a blocking open with a watchdog; here a hang would stop the suite.
    assert main(["check", str(tiny_copy)]) == 1
    out = capsys.readouterr().out
    assert f"{fifo} is a FIFO (named pipe), not a regular file; it is not read" in out
    assert "split_test.txt is a FIFO (named pipe)" in out
    with pytest.raises(ValueError, match=r"is a FIFO \(named pipe\)"):
        AcmNetFeatures(tiny_copy, "train")


def test_check_reports_every_ground_truth_problem(tiny_copy):
    gt = json.loads((tiny_copy / "gt.json").read_text())
    videos = list(gt["database"])
    gt["database"][videos[0]]["duration"] = -1
    gt["database"][videos[1]]["annotations"].append({"segment": [1, "x"], "label": "a"})
    gt["database"][videos[1]]["annotations"].append({"segment": [1, 2]})
    gt["database"][videos[7]]["subset"] = None
    (tiny_copy / "gt.json").write_text(json.dumps(gt))
    report = check_dataset(tiny_copy)
    problems = [e for e in report["errors"] if "gt.json: video" in e]
    assert len(problems) == 4 and report["problem_counts"]["ground truth"] == 4
    assert f"video {videos[0]!r} must have a positive 'duration'" in problems[0]
    assert "without a finite [start, end] 'segment'" in problems[1] and "without a string 'label'" in problems[2]
    assert f"video {videos[7]!r} has no string 'subset'" in problems[3]
    # the other videos are still checked: a damaged feature file of a valid video is reported too
    np.save(tiny_copy / "test" / f"{videos[-1]}.npy", np.ones(3, np.float32))
    assert any(videos[-1] in e and "must have shape" in e for e in check_dataset(tiny_copy)["errors"])
    with pytest.raises(ValueError, match=r"must have a positive 'duration' .* \(3 more problem\(s\) in "):
        AcmNetFeatures(tiny_copy, "train")
