"""The one crop convention: device crops (`crop_and_resize`, what trackers cut) and CPU warps
(`warp_crop`, what training data is cut with) give the same pixels, on a real frame."""
import cv2
import numpy as np
import pytest
import torch

from vtrack_core.ops.crops import crop_and_resize, image_to_tensor, warp_crop


@pytest.fixture(scope="module")
def frame(dev_dataset_dir):
    return cv2.imread(str(dev_dataset_dir / "Couple" / "img" / "0001.jpg"))


@pytest.mark.parametrize("cx, cy, side, out", [(150.0, 100.0, 64.0, 32), (150.3, 100.7, 100.0, 127),
                                               (10.0, 10.0, 80.0, 40), (300.5, 230.2, 200.0, 255)])
def test_device_crop_equals_cpu_warp(frame, cx, cy, side, out):
    tensor = image_to_tensor(frame, torch.device("cpu"))
    mean = frame.reshape(-1, 3).mean(axis=0)
    crop = crop_and_resize(tensor, torch.tensor([cx, cy]), torch.tensor([side]), out)[0].permute(1, 2, 0).numpy()
    reference = warp_crop(frame.astype(np.float32), (cx, cy), side, out, mean)
    assert np.abs(crop - reference).max() < 0.01  # OpenCV interpolates in fixed point


def test_rectangular_crops_agree_too(frame):
    tensor = image_to_tensor(frame, torch.device("cpu"))
    mean = frame.reshape(-1, 3).mean(axis=0)
    crop = crop_and_resize(tensor, torch.tensor([120.0, 90.0]), torch.tensor([[60.0, 140.0]]), 48)
    reference = warp_crop(frame.astype(np.float32), (120.0, 90.0), (60.0, 140.0), 48, mean)
    assert np.abs(crop[0].permute(1, 2, 0).numpy() - reference).max() < 0.01


def test_centre_pixel_of_an_odd_crop_is_the_centre_pixel(frame):
    """Pixel centres sit at integers: an odd crop of the native size around pixel (c, r) is
    the image window itself, in both implementations."""
    tensor = image_to_tensor(frame, torch.device("cpu"))
    window = frame[80:111, 130:161].astype(np.float32)  # 31 x 31 around (145, 95)
    device = crop_and_resize(tensor, torch.tensor([145.0, 95.0]), torch.tensor([31.0]), 31)[0].permute(1, 2, 0)
    assert np.abs(device.numpy() - window).max() < 1e-3
    assert np.abs(warp_crop(frame, (145.0, 95.0), 31.0, 31, (0, 0, 0)).astype(np.float32) - window).max() <= 1


def test_outside_takes_the_fill_colour(frame):
    fill = (10.0, 200.0, 30.0)
    far = warp_crop(frame, (-500.0, -500.0), 50.0, 16, fill)
    assert (far == np.array(fill, dtype=np.uint8)).all()
    tensor = image_to_tensor(frame, torch.device("cpu"))
    device = crop_and_resize(tensor, torch.tensor([-500.0, -500.0]), torch.tensor([50.0]), 16, torch.tensor(fill))
    assert torch.allclose(device[0, :, 0, 0], torch.tensor(fill))


def test_scales_in_one_batch_equal_each_alone(frame):
    tensor = image_to_tensor(frame, torch.device("cpu"))
    sides = torch.tensor([90.0, 100.0, 110.0])
    batch = crop_and_resize(tensor, torch.tensor([150.0, 100.0]), sides, 64)
    for i, side in enumerate(sides):
        alone = crop_and_resize(tensor, torch.tensor([150.0, 100.0]), side.reshape(1), 64)
        assert torch.allclose(batch[i], alone[0], atol=1e-4)


def test_half_precision_frames_are_cropped_at_full_precision_positions():
    """fp16 (the CUDA option) holds pixel values, not positions: near x = 1500 a float16
    coordinate is only good to 1 px, so crops are placed in float32 whatever the frame's type."""
    ramp = np.broadcast_to((np.arange(1920, dtype=np.float32) / 8.0)[None, :, None], (64, 1920, 3))
    frame = torch.from_numpy(np.ascontiguousarray(ramp)).permute(2, 0, 1).unsqueeze(0)  # exact in fp16
    full = crop_and_resize(frame, torch.tensor([1500.3, 31.5]), torch.tensor([400.0]), 127)
    half = crop_and_resize(frame.half(), torch.tensor([1500.3, 31.5]), torch.tensor([400.0]), 127)
    assert half.dtype == torch.float16
    # The ramp rises 1/8 per pixel and fp16 stores 128..256 in steps of 1/8: only the output
    # rounding (1/16) may differ, i.e. half a pixel of position at most.
    assert (half.float() - full).abs().max() <= 1 / 16 + 1e-6
