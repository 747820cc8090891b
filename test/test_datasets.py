"""Dataset readers: the real OTB-layout dev set, and small generated OTB / GOT-10k folders."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from vtrack_core.eval.datasets import (
    DatasetError,
    Sequence,
    detect_layout,
    load_dataset,
    read_boxes,
    read_got10k,
    read_otb_sequence,
)

DEV_FRAMES = {"Couple": 140, "Crossing": 120, "Football1": 74, "Skiing": 81}


def _write_frames(folder: Path, count: int, pattern: str = "{:04d}.jpg", size: tuple = (24, 32)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        image = np.full((*size, 3), (i * 20) % 256, dtype=np.uint8)
        assert cv2.imwrite(str(folder / pattern.format(i)), image)


# --- real data ----------------------------------------------------------------------------
def test_dev_set_reads_as_otb(dev_dataset_dir: Path) -> None:
    assert detect_layout(dev_dataset_dir) == "otb"
    sequences = load_dataset(dev_dataset_dir)
    by_name = {s.name: s for s in sequences}
    for name, frames in DEV_FRAMES.items():
        seq = by_name[name]
        assert len(seq) == frames == len(seq.ground_truth) == len(seq.frames)
        gt_rows = len(read_boxes(dev_dataset_dir / name / "groundtruth_rect.txt"))
        assert len(seq) == gt_rows
        assert seq.ground_truth.dtype == np.float64 and seq.ground_truth.shape == (frames, 4)
        assert [p.name for p in seq.frames[:2]] == ["0001.jpg", "0002.jpg"]
    for seq in sequences:
        assert len(seq) == len(seq.ground_truth) > 0


def test_dev_sequence_frames_and_ground_truth(dev_dataset_dir: Path) -> None:
    (couple,) = load_dataset(dev_dataset_dir, ["Couple"])
    assert len(couple) == 140
    np.testing.assert_array_equal(couple.ground_truth[0], [51, 47, 25, 62])
    image = couple.image(0)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert couple.first_valid_index() == 0
    assert len(couple.head(30)) == 30 and len(couple.head(None)) == 140 and len(couple.head(1000)) == 140


def test_names_select_in_order_and_unknown_names_fail(dev_dataset_dir: Path) -> None:
    names = [s.name for s in load_dataset(dev_dataset_dir, ["Skiing", "Couple"])]
    assert names == ["Skiing", "Couple"]
    with pytest.raises(DatasetError, match="no sequence.*Nope.*available: .*Couple"):
        load_dataset(dev_dataset_dir, ["Nope"])


def test_single_sequence_folder_loads(dev_dataset_dir: Path) -> None:
    (seq,) = load_dataset(dev_dataset_dir / "Football1")
    assert seq.name == "Football1" and len(seq) == 74


# --- generated OTB ------------------------------------------------------------------------
def test_otb_nan_rows_separators_and_multiple_targets(tmp_path: Path) -> None:
    seq_dir = tmp_path / "Pair"
    _write_frames(seq_dir / "img", 4)
    (seq_dir / "groundtruth_rect.1.txt").write_text("1,2,10,12\n2\t3\t10\t12\nNaN,NaN,NaN,NaN\n4 5 10 12\n")
    (seq_dir / "groundtruth_rect.2.txt").write_text("20,2,5,6\nnan nan nan nan\n22,2,5,6\n23,2,5,6\n\n")
    sequences = load_dataset(tmp_path)
    assert [s.name for s in sequences] == ["Pair.1", "Pair.2"]
    first, second = sequences
    assert first.frames == second.frames and len(first) == 4
    expected = [[1, 2, 10, 12], [2, 3, 10, 12], [4, 5, 10, 12]]
    np.testing.assert_array_equal(first.ground_truth[[0, 1, 3]], expected)
    assert np.isnan(first.ground_truth[2]).all() and np.isnan(second.ground_truth[1]).all()
    np.testing.assert_array_equal(first.valid_mask(), [True, True, False, True])
    assert second.first_valid_index() == 0
    assert [s.name for s in load_dataset(tmp_path, ["Pair"])] == ["Pair.1", "Pair.2"]
    assert [s.name for s in load_dataset(tmp_path, ["Pair.2"])] == ["Pair.2"]
    assert first.image(3).shape == (24, 32, 3)


def test_otb_length_mismatch_truncates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seq_dir = tmp_path / "Short"
    _write_frames(seq_dir / "img", 11, pattern="{}.png")  # not zero-padded: needs natural order
    (seq_dir / "groundtruth_rect.txt").write_text("".join(f"{i},1,5,5\n" for i in range(12)))
    with caplog.at_level(logging.WARNING):
        (seq,) = read_otb_sequence(seq_dir)
    assert len(seq) == 11 and len(seq.ground_truth) == 11
    assert [p.name for p in seq.frames[:3]] + [seq.frames[-1].name] == ["1.png", "2.png", "3.png", "11.png"]
    assert "11 frames but 12 ground-truth rows" in caplog.text


def test_first_frame_absent_means_later_start(tmp_path: Path) -> None:
    seq_dir = tmp_path / "Late"
    _write_frames(seq_dir / "img", 3)
    (seq_dir / "groundtruth_rect.txt").write_text("NaN,NaN,NaN,NaN\n0,0,0,0\n3,3,8,8\n")
    (seq,) = load_dataset(seq_dir)
    assert seq.first_valid_index() == 2


def test_bad_ground_truth_line_names_the_line(tmp_path: Path) -> None:
    seq_dir = tmp_path / "Bad"
    _write_frames(seq_dir / "img", 2)
    (seq_dir / "groundtruth_rect.txt").write_text("1,2,3,4\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"groundtruth_rect.txt:2: expected 4 values"):
        load_dataset(tmp_path)


def test_unreadable_frame_is_a_clear_error(tmp_path: Path) -> None:
    seq_dir = tmp_path / "Broken"
    (seq_dir / "img").mkdir(parents=True)
    (seq_dir / "img" / "0001.jpg").write_bytes(b"not a jpeg")
    (seq_dir / "groundtruth_rect.txt").write_text("1,2,3,4\n")
    (seq,) = load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="cannot read frame 0"):
        seq.image(0)


def test_folder_that_is_neither_layout(tmp_path: Path) -> None:
    (tmp_path / "something").mkdir()
    (tmp_path / "something" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="neither an OTB dataset .* nor a GOT-10k"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(tmp_path / "missing")


def test_sequence_checks_lengths() -> None:
    with pytest.raises(DatasetError, match="2 frames but 1 ground-truth rows"):
        Sequence("x", [Path("a.jpg"), Path("b.jpg")], np.zeros((1, 4)))


# --- generated GOT-10k --------------------------------------------------------------------
def _make_got10k(root: Path) -> None:
    for name, count in (("GOT-10k_Val_000002", 3), ("GOT-10k_Val_000001", 4)):
        _write_frames(root / name, count, pattern="{:08d}.jpg")
        (root / name / "groundtruth.txt").write_text("".join(f"{i}.5,2,10,11\n" for i in range(count)))
    (root / "GOT-10k_Val_000001" / "absence.label").write_text("0\n1\n0\n1\n")
    (root / "list.txt").write_text("GOT-10k_Val_000001\nGOT-10k_Val_000002\n")


def test_got10k_reader(tmp_path: Path) -> None:
    _make_got10k(tmp_path)
    assert detect_layout(tmp_path) == "got10k"
    sequences = load_dataset(tmp_path)
    assert [s.name for s in sequences] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]  # list.txt order
    first, second = sequences
    assert len(first) == 4 and len(second) == 3
    assert first.frames[0].name == "00000001.jpg"
    np.testing.assert_array_equal(np.isnan(first.ground_truth).all(axis=1), [False, True, False, True])
    np.testing.assert_array_equal(first.ground_truth[2], [2.5, 2, 10, 11])
    assert not np.isnan(second.ground_truth).any()
    assert first.image(1).shape == (24, 32, 3)
    assert [s.name for s in load_dataset(tmp_path, ["GOT-10k_Val_000002"])] == ["GOT-10k_Val_000002"]
    (single,) = load_dataset(tmp_path / "GOT-10k_Val_000002")
    assert len(single) == 3


def test_got10k_without_list_file_and_with_missing_entries(tmp_path: Path) -> None:
    _make_got10k(tmp_path)
    (tmp_path / "list.txt").unlink()
    assert [s.name for s in read_got10k(tmp_path)] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]
    (tmp_path / "list.txt").write_text("GOT-10k_Val_000001\nGOT-10k_Val_000009\n")
    with pytest.raises(DatasetError, match="GOT-10k_Val_000009"):
        load_dataset(tmp_path)
