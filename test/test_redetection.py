"""Re-acquisition after LOST (issue 20, part 3) on real frames: DragonBaby's out-of-view
variant (seed 0: the boy is occluded by a patch of another sequence, then the crop window
pans away from him and back). SiamFC with its wide search finds him again after both
absences; without it, it does not after one of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_vtrack
from vtrack_core import Box, TrackState, create_tracker
from vtrack_core.eval.calibration import calibration_frames
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.eval.runner import run_sequence


@pytest.fixture(scope="module")
def dragonbaby_oov(dev_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("oov") / "variant"
    done = run_vtrack("outofview", "--dataset", str(dev_dataset_dir), "--out", str(out), "--seed", "0",
                      "--sequences", "DragonBaby", timeout=300)
    assert done.returncode == 0, done.stderr
    return load_dataset(out)[0]


def _run(sequence, **settings):
    result = run_sequence(create_tracker("siamfc", device="cpu", **settings), sequence, label="siamfc")
    frames = calibration_frames(result.boxes, result.confidences, result.states, sequence.ground_truth,
                                result.init_index)
    return result, frames


@pytest.mark.slow
def test_siamfc_finds_the_target_again_after_it_left_and_came_back(dragonbaby_oov):
    absent = ~np.isfinite(dragonbaby_oov.ground_truth).all(axis=1)
    assert absent.sum() > 20  # the variant really hides him
    result, frames = _run(dragonbaby_oov)
    assert frames.returns == 2
    assert frames.reacquired == 2  # both returns tracked on target within 30 frames
    assert np.mean(np.asarray(result.states)[absent] == int(TrackState.LOST)) > 0.6
    _, without = _run(dragonbaby_oov, redetect=False)
    assert without.returns == 2 and without.reacquired < frames.reacquired


def test_the_wide_window_grows_to_the_whole_frame_and_stays_on_the_stride_grid(dev_dataset_dir):
    sequence = load_dataset(dev_dataset_dir, ["DragonBaby"])[0]
    tracker = create_tracker("siamfc", device="cpu", redetect_growth=2.0, redetect_max_scale=3.0)
    tracker.init(sequence.image(0), Box.from_xywh(sequence.ground_truth[0]))
    x_side = 250.0  # the frame (640 px wide) is 2.56 search sides
    stride = tracker.net.total_stride
    sizes = []
    for lost_frames in (1, 2, 3):
        tracker.lost_rule.lost_frames = lost_frames
        centre, pixels = tracker.redetect_window(x_side, sequence.image(0).shape)
        assert (pixels - tracker.config.instance_size) % stride == 0
        sizes.append(pixels * x_side / tracker.config.instance_size)
    height, width = sequence.image(0).shape[:2]
    assert sizes[0] == pytest.approx(2 * x_side, abs=stride)  # growth 2 after one LOST frame
    assert sizes[1] == pytest.approx(max(width, height), abs=stride)  # 3x would pass the frame: the frame
    np.testing.assert_allclose(centre, [width / 2, height / 2])  # centred on it
    assert sizes[2] == sizes[1]
