"""`vtrack outofview` on real dev frames: reproducible, absent frames really absent (by
geometry, and by the pixels under the occluder), present boxes where the source's pixels are,
and `vtrack eval` on the variant reports the calibration / LOST measures."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_vtrack
from vtrack_core.eval.datasets import Sequence, load_dataset, read_boxes
from vtrack_core.eval.outofview import OutOfViewSettings, build_out_of_view, plan_sequence

SEQUENCES = ["Skiing", "MotorRolling"]
FRAMES = 80
MIN_VISIBLE = OutOfViewSettings().min_visible


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def variant(dev_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Skiing and MotorRolling (first 80 frames), seed 3, built through the command line."""
    out = tmp_path_factory.mktemp("oov") / "variant"
    done = run_vtrack("outofview", "--dataset", str(dev_dataset_dir), "--out", str(out), "--seed", "3",
                      "--sequences", *SEQUENCES, "--max-frames", str(FRAMES), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Skiing" in done.stdout and "out-of-view" in done.stdout
    return out


@pytest.fixture(scope="module")
def sources(dev_dataset_dir: Path) -> dict[str, Sequence]:
    return {s.name: s.head(FRAMES) for s in load_dataset(dev_dataset_dir, SEQUENCES)}


@pytest.fixture(scope="module")
def description(variant: Path) -> dict:
    return json.loads((variant / "outofview.json").read_text())


def _rows(path: Path) -> np.ndarray:
    return read_boxes(path)


def _share_inside(box: np.ndarray, rect: np.ndarray) -> float:
    """Share of x,y,w,h `box` inside x,y,w,h `rect` (computed here, not by the builder)."""
    w = min(box[0] + box[2], rect[0] + rect[2]) - max(box[0], rect[0])
    h = min(box[1] + box[3], rect[1] + rect[3]) - max(box[1], rect[1])
    return max(w, 0) * max(h, 0) / (box[2] * box[3])


def test_same_seed_same_files_and_a_sequence_does_not_depend_on_the_others(
        variant: Path, dev_dataset_dir: Path, tmp_path: Path, description: dict) -> None:
    settings = OutOfViewSettings(seed=3, max_frames=FRAMES)
    again = build_out_of_view(dev_dataset_dir, tmp_path / "again", settings, SEQUENCES)
    assert _files(tmp_path / "again") == _files(variant)
    assert again == description
    alone = build_out_of_view(dev_dataset_dir, tmp_path / "alone", settings, ["Skiing"])
    assert alone["sequences"]["Skiing"] == description["sequences"]["Skiing"]
    assert _files(tmp_path / "alone" / "Skiing") == _files(variant / "Skiing")

    every = load_dataset(dev_dataset_dir)
    skiing = next(s for s in every if s.name == "Skiing").head(FRAMES)
    plans = [plan_sequence(skiing, every, OutOfViewSettings(seed=seed, max_frames=FRAMES)) for seed in (3, 4)]
    assert plans[0].episodes == description["sequences"]["Skiing"]["episodes"]
    assert plans[1].episodes != plans[0].episodes  # the seed matters


def test_the_variant_reads_as_an_otb_dataset_with_nan_rows_where_absent(variant: Path, description: dict) -> None:
    assert description["seed"] == 3 and description["settings"]["max_frames"] == FRAMES
    sequences = load_dataset(variant)
    assert [s.name for s in sequences] == sorted(SEQUENCES)
    kinds = set()
    for seq in sequences:
        entry = description["sequences"][seq.name]
        assert len(seq) == entry["frames"] == FRAMES
        absent = np.zeros(len(seq), dtype=bool)
        for runs in entry["absent"].values():
            for first, last in runs:
                absent[first:last + 1] = True
        assert absent.sum() == entry["absent_frames"] > 0
        np.testing.assert_array_equal(~seq.valid_mask(), absent)
        assert np.isnan(seq.ground_truth[absent]).all()
        assert seq.first_valid_index() == 0 and seq.valid_mask()[:OutOfViewSettings().lead_in].all()
        lines = (variant / seq.name / "groundtruth_rect.txt").read_text().splitlines()
        assert {lines[i] for i in np.flatnonzero(absent)} == {"NaN,NaN,NaN,NaN"}
        image = seq.image(0)
        assert (image.shape[1], image.shape[0]) == tuple(entry["window_size"])
        kinds.update(e["kind"] for e in entry["episodes"])
    assert kinds == {"out_of_view", "occlusion"}  # both kinds are tested below


def test_out_of_view_frames_have_the_target_outside_the_window(
        variant: Path, description: dict, sources: dict[str, Sequence]) -> None:
    checked = 0
    for name, entry in description["sequences"].items():
        source_gt = sources[name].ground_truth
        windows = _rows(variant / name / "window.txt")
        gt = _rows(variant / name / "groundtruth_rect.txt")
        for episode in (e for e in entry["episodes"] if e["kind"] == "out_of_view"):
            first, last = episode["hold"]
            for t in range(first, last + 1):
                np.testing.assert_array_equal(windows[t], episode["hold_window"])
                assert _share_inside(source_gt[t], windows[t]) == 0.0  # wholly out while held away
                checked += 1
        for first, last in entry["absent"].get("out_of_view", []):
            for t in range(first, last + 1):
                assert _share_inside(source_gt[t], windows[t]) < MIN_VISIBLE
                assert np.isnan(gt[t]).all()
        for t in np.flatnonzero(np.isfinite(gt).all(axis=1)):
            assert _share_inside(source_gt[t], windows[t]) >= MIN_VISIBLE
        size = np.array(entry["window_size"])
        assert (windows[:, 2:] == size).all()  # one window size a sequence
        frame = np.array(entry["source_size"])
        assert (windows[:, :2] >= 0).all() and (windows[:, :2] + size <= frame).all()  # never past the frame
    assert checked >= 10


def test_occluded_frames_are_covered_by_another_sequences_pixels(
        variant: Path, description: dict, sources: dict[str, Sequence], dev_dataset_dir: Path) -> None:
    every = {s.name: s for s in load_dataset(dev_dataset_dir)}
    out = {s.name: s for s in load_dataset(variant)}
    checked = 0
    for name, entry in description["sequences"].items():
        windows = _rows(variant / name / "window.txt")
        occluders = _rows(variant / name / "occluder.txt")
        for episode in (e for e in entry["episodes"] if e["kind"] == "occlusion"):
            donor = episode["donor"]
            assert donor["sequence"] != name
            x, y, w, h = donor["region"]
            donor_box = every[donor["sequence"]].ground_truth[donor["frame"]]
            assert _share_inside(donor_box, np.array(donor["region"], float)) == 0.0  # not the donor's target
            patch = every[donor["sequence"]].image(donor["frame"])[y:y + h, x:x + w].astype(int)
            first, last = episode["covered"]
            for t in range(first, last + 1):
                box = sources[name].ground_truth[t] - [*windows[t, :2], 0, 0]  # in the output frame
                ox, oy = (int(v) for v in occluders[t, :2])
                assert _share_inside(box, occluders[t]) == 1.0
                assert np.isnan(out[name].ground_truth[t]).all()
                image = out[name].image(t).astype(int)
                x0, y0 = max(ox, 0), max(oy, 0)
                x1, y1 = min(ox + w, image.shape[1]), min(oy + h, image.shape[0])
                pasted = image[y0:y1, x0:x1]
                assert np.abs(pasted - patch[y0 - oy:y1 - oy, x0 - ox:x1 - ox]).mean() < 3.0  # JPEG noise only
                checked += 1
        present = np.isfinite(out[name].ground_truth).all(axis=1)
        placed = np.isfinite(occluders).all(axis=1)
        np.testing.assert_array_equal(np.flatnonzero(placed), _episode_frames(entry))  # only in its episode
        if entry["episodes"] and any(e["kind"] == "occlusion" for e in entry["episodes"]):
            assert (placed & present).any()  # partly covered, coming or going: still present
    assert checked >= 10


def _episode_frames(entry: dict) -> list[int]:
    frames: list[int] = []
    for e in entry["episodes"]:
        if e["kind"] == "occlusion":
            frames.extend(range(e["cover"][0], e["uncover"][1] + 1))
    return frames


def test_present_boxes_map_onto_the_source_pixels(
        variant: Path, description: dict, sources: dict[str, Sequence]) -> None:
    out = {s.name: s for s in load_dataset(variant)}
    for name, entry in description["sequences"].items():
        windows = _rows(variant / name / "window.txt").astype(int)
        occluders = _rows(variant / name / "occluder.txt")
        gt = out[name].ground_truth
        ww, wh = entry["window_size"]
        for t in range(0, FRAMES, 3):
            x, y = windows[t, :2]
            if np.isfinite(gt[t]).all():  # the box is the source's, moved by the window and cut to it
                bx, by, bw, bh = sources[name].ground_truth[t]
                x1, y1 = max(bx - x, 0), max(by - y, 0)
                x2, y2 = min(bx + bw - x, ww), min(by + bh - y, wh)
                np.testing.assert_allclose(gt[t], [x1, y1, x2 - x1, y2 - y1], atol=1e-9)
            if not np.isfinite(occluders[t]).all():  # nothing pasted: the crop is the source frame's
                image = out[name].image(t).astype(int)
                source = sources[name].image(t).astype(int)
                assert np.abs(image - source[y:y + wh, x:x + ww]).mean() < 2.5
                shifted = source[y:y + wh, x + 3:x + 3 + ww] if x + 3 + ww <= source.shape[1] \
                    else source[y:y + wh, x - 3:x - 3 + ww]
                assert np.abs(image - shifted).mean() > 4.0  # the check above can tell 3 px apart
                if np.isfinite(gt[t]).all():
                    gx, gy, gw, gh = np.round(gt[t]).astype(int)
                    inside = image[gy:gy + gh, gx:gx + gw]
                    assert np.abs(inside - source[y + gy:y + gy + gh, x + gx:x + gx + gw]).mean() < 4.0


def test_eval_on_the_variant_reports_calibration_and_lost(variant: Path, description: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    done = run_vtrack("eval", "--trackers", "csrt", "--dataset", str(variant), "--max-frames", str(FRAMES),
                      "--out", str(out), "--no-progress", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "abs-LU" in done.stdout and "ECE" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    csrt = summary["trackers"]["csrt"]
    blocks = [csrt["calibration"], *(s["calibration"] for s in csrt["sequences"].values())]
    for block in blocks:
        for key in ("absent_flagged", "absent_lost", "present_lost", "on_target_share", "ece"):
            assert block[key] is not None and 0.0 <= block[key] <= 1.0, key
        assert block["auroc"] is None or 0.0 <= block["auroc"] <= 1.0
        assert block["absent_lost"] <= block["absent_flagged"]
        assert sum(block["reliability"]["frames"]) == block["frames"] > 0
        assert "note" not in block
    for name, entry in description["sequences"].items():
        block = csrt["sequences"][name]["calibration"]
        assert block["absent_frames"] == entry["absent_frames"]  # every absent frame is after the init frame
        assert block["frames"] + block["absent_frames"] <= FRAMES - 1
        states = (out / "results" / "csrt" / f"{name}_state.txt").read_text().split()
        assert len(states) == FRAMES and states[0] == "0"
    assert csrt["calibration"]["absent_frames"] == sum(e["absent_frames"] for e in description["sequences"].values())
    assert (out / "reliability.png").is_file()


def test_outofview_refuses_what_it_must_not_overwrite(variant: Path, dev_dataset_dir: Path, tmp_path: Path) -> None:
    args = ["--dataset", str(dev_dataset_dir), "--sequences", "Skiing", "--max-frames", "40"]
    done = run_vtrack("outofview", *args, "--out", str(variant))
    assert done.returncode == 2 and "not empty" in done.stderr and "Traceback" not in done.stderr
    done = run_vtrack("outofview", *args, "--out", str(dev_dataset_dir / "variant"))
    assert done.returncode == 2 and "inside the source dataset" in done.stderr
    assert not (dev_dataset_dir / "variant").exists()
    done = run_vtrack("outofview", *args, "--out", str(tmp_path / "o"), "--window-scale", "1.5")
    assert done.returncode == 2 and "window_scale" in done.stderr
    done = run_vtrack("outofview", *args, "--out", str(tmp_path / "o"), "--hold-frames", "9..3")
    assert done.returncode == 2 and "LOW <= HIGH" in done.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    done = run_vtrack("outofview", *args, "--out", str(tmp_path / "mine"), "--overwrite")
    assert done.returncode == 2 and "holds no outofview.json" in done.stderr
    assert (tmp_path / "mine" / "notes.txt").is_file()
