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
