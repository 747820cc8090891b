"""CUDA agrees with the CPU: device crops, every backbone, and every deep tracker on real dev
frames, in fp32 and fp16. Marked `cuda` and skipped where no CUDA device exists
(`benchmarks/gpu_check.sh` runs them on a GPU machine)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vtrack_core import Box, create_tracker
from vtrack_core.backbones import available_backbones, build_backbone
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.ops.crops import crop_and_resize, image_to_tensor

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def david(dev_dataset_dir):
    return load_dataset(dev_dataset_dir, ["David"])[0]


def test_device_crops_equal_cpu_crops(david):
    image = david.image(0)
    centres = torch.tensor([[150.3, 100.7], [10.0, 10.0], [300.0, 200.0]])
    sizes = torch.tensor([100.0, 80.0, 255.0])
    cpu = crop_and_resize(image_to_tensor(image, CPU), centres, sizes, 127)
    gpu = crop_and_resize(image_to_tensor(image, CUDA), centres.to(CUDA), sizes.to(CUDA), 127)
    assert (gpu.cpu() - cpu).abs().max() < 1e-3
    half = crop_and_resize(image_to_tensor(image, CUDA).half(), centres.to(CUDA), sizes.to(CUDA), 127)
    assert half.dtype == torch.float16 and (half.float().cpu() - cpu).abs().max() < 0.5  # fp16 holds 255 to 1/8


@pytest.mark.parametrize("name", available_backbones())
def test_backbones_agree_with_the_cpu(name, david):
    torch.manual_seed(0)
    weights = None if name in ("efficientnet_lite0", "mobilenet_v2", "vgg16") else "random"
    backbone = build_backbone(name, weights).eval()
    crop = crop_and_resize(image_to_tensor(david.image(0), CPU), torch.tensor([160.0, 120.0]), torch.tensor([200.0]), 255)
    with torch.no_grad():
        cpu = backbone(crop)
        gpu = backbone.to(CUDA)(crop.to(CUDA))
        half = backbone.half()(crop.to(CUDA).half())
    for tap, reference in cpu.items():
        scale = float(reference.abs().max()) + 1e-6
        assert float((gpu[tap].float().cpu() - reference).abs().max()) / scale < 1e-3, tap
        assert float((half[tap].float().cpu() - reference).abs().max()) / scale < 5e-2, tap


def _track(name: str, sequence, frames: int, **settings) -> np.ndarray:
    tracker = create_tracker(name, **settings)
    tracker.init(sequence.image(0), Box.from_xywh(sequence.ground_truth[0]))
    return np.array([tracker.update(sequence.image(i)).box.xywh() for i in range(1, frames)])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from vtrack_core.boxes import iou

    return iou(a, b)


@pytest.mark.parametrize("name", ["siamfc", "fdn", "fcnt", "rar"])
def test_trackers_on_cuda_follow_the_cpu_track(name, david):
    """30 frames of David: the CUDA track (fp32, fp16) overlaps the CPU track on every frame
    (kernels differ in rounding, and trackers that learn online may drift a little)."""
    settings = {"selected_maps": 64} if name == "fcnt" else {}
    cpu = _track(name, david, 30, device="cpu", **settings)
    for half in (False, True):
        gpu = _track(name, david, 30, device="cuda", half=half, **settings)
        overlap = _iou(cpu, gpu)
        assert overlap.min() > (0.8 if half else 0.9), (half, overlap.round(2).tolist())
