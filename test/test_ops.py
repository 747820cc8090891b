"""The shared building blocks: the scale pyramid for any number of scales, the Gaussian label
and Hann window, and the candidate sampler's kinds."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vtrack_core.ops.maps import gaussian_label, hann_window
from vtrack_core.ops.sampling import SampleSpec, draw_boxes
from vtrack_core.ops.scales import ScalePyramid


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_scale_pyramid_is_symmetric_for_any_count(count):
    pyramid = ScalePyramid(count, 1.05, 0.97, 0.5)
    assert len(pyramid) == count
    np.testing.assert_allclose(pyramid.factors * pyramid.factors[::-1], 1.0)  # step^e and step^-e pair up
    # Equal peaks: the nearest scale wins (an odd pyramid keeps the current size; an even
    # one has none and takes one of the two middle factors).
    best = int(pyramid.best(torch.ones(count)))
    assert best in ((count - 1) // 2, count // 2)
    np.testing.assert_allclose(pyramid.penalties.numpy(), pyramid.penalties.numpy()[::-1])
    if count % 2:
        assert pyramid.factors[best] == 1.0
        assert np.allclose(pyramid.new_size(np.array([40.0, 20.0]), best), [40.0, 20.0])


def test_scale_pyramid_moves_only_for_a_clear_win_and_damps_the_change():
    pyramid = ScalePyramid(3, 1.03, 0.9745, 0.65)
    assert int(pyramid.best(torch.tensor([2.0, 2.02, 2.0]))) == 1
    assert int(pyramid.best(torch.tensor([-2.18, -2.19, -2.18]))) == 1  # unsure: keep the size
    assert int(pyramid.best(torch.tensor([2.2, 2.0, 1.0]))) == 0
    assert pyramid.new_size(np.array([100.0, 50.0]), 2) == pytest.approx([100.0 * (0.35 + 0.65 * 1.03), 50.0 * (0.35 + 0.65 * 1.03)])


def test_gaussian_label_peaks_where_asked_with_its_deviation():
    label = gaussian_label((21, 31), (2.0, 4.0), (7.0, 20.0))
    assert label.shape == (21, 31) and float(label.max()) == 1.0
    assert divmod(int(torch.argmax(label)), 31) == (7, 20)
    assert float(label[9, 20]) == pytest.approx(np.exp(-0.5))  # one sigma down the rows
    assert float(label[7, 24]) == pytest.approx(np.exp(-0.5))  # one sigma along the columns
    batch = gaussian_label(11, 1.5, torch.tensor([[5.0, 5.0], [2.0, 8.0]]))
    assert batch.shape == (2, 11, 11) and torch.equal(batch[0], gaussian_label(11, 1.5))


def test_hann_window():
    window = hann_window(17)
    assert window.shape == (17, 17) and float(window[8, 8]) == 1.0 and float(window[0, 5]) == 0.0
    assert torch.allclose(window, window.T)
    assert float(hann_window(17, normalised=True).sum()) == pytest.approx(1.0)
    assert torch.equal(hann_window(2), torch.ones(2, 2))


def test_normal_candidates_spread_in_pixels_and_log_size():
    rng = np.random.default_rng(0)
    box = np.array([100.0, 50.0, 40.0, 20.0])
    boxes = draw_boxes(rng, box, 50_000, SampleSpec("normal", 10.0, 0.05), bounds=None)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    np.testing.assert_allclose(centres.std(axis=0), [10.0, 10.0], rtol=0.02)
    np.testing.assert_allclose(np.log(boxes[:, 2] / 40.0).std(), 0.05, rtol=0.02)
    np.testing.assert_allclose(boxes[:, 2] / boxes[:, 3], 2.0)  # aspect kept
    with pytest.raises(ValueError, match="bounds"):
        draw_boxes(rng, box, 4, SampleSpec("gaussian", 0.5, 1.05), bounds=None)


@pytest.mark.parametrize("size_in, size_out", [(17, 272), (5, 13), (9, 9)])
def test_bicubic_matrix_is_torch_bicubic_upsampling(size_in, size_out):
    """Two matrix products give F.interpolate's bicubic (align_corners=False) for any map,
    borders included, so SiamFC's response is unchanged by the faster form."""
    from vtrack_core.ops.maps import bicubic_matrix, upsample_bicubic

    maps = torch.randn(3, size_in, size_in, generator=torch.Generator().manual_seed(0)) * 5
    maps[0, 0, 0] = 40.0  # a corner peak: the clamped border indices matter
    expected = F.interpolate(maps[:, None], size=(size_out, size_out), mode="bicubic", align_corners=False)[:, 0]
    got = upsample_bicubic(maps, bicubic_matrix(size_in, size_out))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    assert got.shape == (3, size_out, size_out)


# --- re-detection window and grid (issue 20) ------------------------------------------------------
def test_redetect_window_grows_caps_and_centres_on_the_frame():
    from vtrack_core.ops.redetect import redetect_window

    shape = (480, 640, 3)
    centre = np.array([100.0, 120.0])
    first = redetect_window(centre, 100.0, shape, 0, 1.5, 3.0)  # at least one growth step
    assert first.factor == pytest.approx(1.5) and not first.whole_frame
    np.testing.assert_allclose(first.centre, centre)
    assert redetect_window(centre, 100.0, shape, 2, 1.5, 3.0).factor == pytest.approx(2.25)
    capped = redetect_window(centre, 100.0, shape, 5, 1.5, 3.0)
    assert capped.factor == pytest.approx(3.0) and not capped.whole_frame
    whole = redetect_window(centre, 300.0, shape, 5, 1.5, 3.0)  # 3 x 300 px passes the 640 px frame
    assert whole.whole_frame and whole.factor == pytest.approx(640 / 300)
    np.testing.assert_allclose(whole.centre, [320.0, 240.0])
    assert redetect_window(centre, 900.0, shape, 1, 1.5, 3.0).factor == 1.0  # never below the normal search


def test_grid_boxes_cover_the_bounds_at_the_step_and_respect_the_cap():
    from vtrack_core.ops.sampling import grid_boxes

    bounds = np.array([10.0, 20.0, 300.0, 200.0])
    boxes = grid_boxes(bounds, np.array([40.0, 60.0]), 20.0, 10_000)
    assert np.all(boxes[:, 2:] == [40.0, 60.0])
    assert boxes[:, 0].min() >= 10.0 and (boxes[:, 0] + boxes[:, 2]).max() <= 310.0 + 1e-9
    assert boxes[:, 1].min() >= 20.0 and (boxes[:, 1] + boxes[:, 3]).max() <= 220.0 + 1e-9
    xs, ys = np.unique(boxes[:, 0]), np.unique(boxes[:, 1])
    assert len(boxes) == len(xs) * len(ys)
    assert np.diff(xs).max() <= 20.0 + 1e-9 and np.diff(ys).max() <= 20.0 + 1e-9  # every 20 px or closer
    # Any point where a centre may lie is within half a step of a grid centre.
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    probe = np.array([[30.0 + 260 * a, 50.0 + 140 * b] for a in (0.0, 0.37, 1.0) for b in (0.0, 0.61, 1.0)])
    nearest = np.abs(centres[None] - probe[:, None]).max(axis=2).min(axis=1)
    assert nearest.max() <= 10.0 + 1e-9
    capped = grid_boxes(bounds, np.array([40.0, 60.0]), 1.0, 100)
    assert 50 <= len(capped) <= 100
    tiny = grid_boxes(np.array([0.0, 0.0, 30.0, 30.0]), np.array([40.0, 60.0]), 5.0, 50)
    assert len(tiny) == 1  # a box larger than the bounds: one, where it starts


def test_tiles_cover_the_window_inside_the_image_and_respect_the_cap():
    from vtrack_core.ops.redetect import RedetectWindow, tile_centres

    shape = (480, 640, 3)
    window = RedetectWindow(np.array([300.0, 240.0]), 3.0, False)  # 300 px around x 300, y 240
    tiles = tile_centres(window, 100.0, shape, 0.5, 100)
    xs, ys = np.unique(tiles[:, 0]), np.unique(tiles[:, 1])
    assert len(tiles) == len(xs) * len(ys) == 25  # 200 px of centres each way, 50 px apart at most
    assert xs.min() >= 150.0 + 50.0 - 1e-9 and xs.max() <= 450.0 - 50.0 + 1e-9  # patches inside the window
    assert ys.min() >= 90.0 + 50.0 - 1e-9 and ys.max() <= 390.0 - 50.0 + 1e-9
    assert np.diff(xs).max() <= 50.0 + 1e-9 and np.diff(ys).max() <= 50.0 + 1e-9
    assert len(tile_centres(window, 100.0, shape, 0.5, 9)) <= 9
    edge = tile_centres(RedetectWindow(np.array([20.0, 240.0]), 3.0, False), 100.0, shape, 0.5, 100)
    assert edge[:, 0].min() >= 50.0 - 1e-9  # the part of the window off the image holds no tile
    tall = tile_centres(RedetectWindow(np.array([320.0, 240.0]), 1.0, True), 640.0, shape, 0.5, 100)
    assert len(tall) == 1 and np.allclose(tall[0], [320.0, 240.0])  # narrower than a patch: the middle
