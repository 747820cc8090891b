"""FDN network shapes and the loaders for the public formats (py-MDNet `.pth`, MatConvNet
VGG-M and MDNet `.mat`), on files generated here in those layouts, checked by running the
network the way the original code would run it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.io import savemat

from vtrack_core.backbones import build_backbone
from vtrack_core.backbones.vgg import detect_norm
from vtrack_core.trackers.fdn import FDNNet, build_fdn_net, load_fdn_state
from vtrack_core.training.fdn_train import export_weights
from vtrack_core.weights import WeightsError


@pytest.fixture(scope="module")
def frame(dev_dataset_dir) -> np.ndarray:
    image = cv2.imread(str(dev_dataset_dir / "David" / "img" / "0001.jpg"))
    return np.ascontiguousarray(image[40:200, 60:220])  # 160 x 160 BGR


def as_input(image: np.ndarray, mean=0.0) -> torch.Tensor:
    """B x 3 x H x W of an image (minus `mean`; networks here read BGR 0..255 as it is)."""
    return (torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
            - torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))


def test_shapes_and_structure():
    net = FDNNet(domains=4).eval()
    with torch.no_grad():
        features = net.features(torch.full((2, 3, 304, 304), 128.0))
        assert features.shape == (2, 512, 17, 17)
        rois = net.rois(features, torch.tensor([[[10.0, 10, 90, 90]] * 3] * 2))
        assert rois.shape == (6, 512 * 3 * 3)
        assert net.head(rois, domain=3).shape == (6, 2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(96, 3, 7, 7), (256, 96, 5, 5), (512, 256, 3, 3)]
    assert [c.stride[0] for c in convs] == [2, 2, 1]
    assert [tuple(m.weight.shape) for m in (net.fc4[0], net.fc5[1])] == [(512, 4608), (512, 512)]
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5] * 5  # fc5 + 4 branches
    assert len(net.fc6) == 4 and all(b[1].out_features == 2 for b in net.fc6)


def reference_vggm(image_rgb: np.ndarray, layers: dict[str, tuple[np.ndarray, np.ndarray]], mean_rgb) -> torch.Tensor:
    """VGG-M conv1-3 as MatConvNet computes it (RGB minus the average colour; LRN
    x / (2 + 1e-4 * sum over 5 channels of x^2)^0.75), from the raw H x W x Cin x Cout arrays."""
    x = as_input(image_rgb, mean_rgb).double()

    def conv(x, name, stride, pad):
        filters, biases = layers[name]
        weight = torch.from_numpy(filters.transpose(3, 2, 0, 1).astype(np.float64))
        return F.conv2d(x, weight, torch.from_numpy(biases.astype(np.float64)), stride=stride, padding=pad)

    def lrn(x):
        squared = F.pad(x.pow(2), (0, 0, 0, 0, 2, 2))
        window = sum(squared[:, i:i + x.shape[1]] for i in range(5))
        return x / (2.0 + 1e-4 * window).pow(0.75)

    x = F.max_pool2d(lrn(F.relu(conv(x, "conv1", 2, 0))), 3, 2)
    x = F.max_pool2d(lrn(F.relu(conv(x, "conv2", 2, 1))), 3, 2)
    return F.relu(conv(x, "conv3", 1, 1))


def random_layers(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = {"conv1": (7, 7, 3, 96), "conv2": (5, 5, 96, 256), "conv3": (3, 3, 256, 512)}
    return {name: ((rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:3]))).astype(np.float32),
                   (rng.standard_normal(shape[3]) * 0.1).astype(np.float32)) for name, shape in shapes.items()}


def simplenn_layers(entries: list[tuple[str, str, tuple | None]]) -> np.ndarray:
    cells = np.empty((1, len(entries)), dtype=object)
    for index, (name, kind, weights) in enumerate(entries):
        layer = {"name": name, "type": kind}
        if weights is not None:
            pair = np.empty((1, 2), dtype=object)
            pair[0, 0], pair[0, 1] = weights
            layer["weights"] = pair
        cells[0, index] = layer
    return cells


def test_matconvnet_vggm_layout(tmp_path, frame):
    """imagenet-vgg-m.mat: `layers` and `meta` at the top level, RGB input minus the average
    image. Our BGR - 128 input must give the same conv3 maps (channels swapped, the mean
    difference folded into conv1's bias)."""
    layers = random_layers()
    rng = np.random.default_rng(5)
    entries = []
    for index, name in enumerate(("conv1", "conv2", "conv3"), start=1):
        entries += [(name, "conv", layers[name]), (f"relu{index}", "relu", None)]
        if index < 3:
            entries += [(f"norm{index}", "lrn", None), (f"pool{index}", "pool", None)]
    entries += [("conv4", "conv", (rng.standard_normal((3, 3, 512, 512)).astype(np.float32),
                                   np.zeros(512, np.float32))),
                ("fc8", "conv", (rng.standard_normal((1, 1, 4096, 10)).astype(np.float32), np.zeros(10, np.float32)))]
    average = np.array([122.7, 116.7, 104.0])
    path = tmp_path / "imagenet-vgg-m.mat"
    savemat(path, {"layers": simplenn_layers(entries),
                   "meta": {"normalization": {"averageImage": average.reshape(1, 1, 3)}}})
    net = build_fdn_net(path).eval()
    assert net.backbone.norm == "lrn"
    with torch.no_grad():
        ours = net.features(as_input(frame))
    expected = reference_vggm(frame[:, :, ::-1].copy(), layers, average).float()
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def test_matconvnet_mdnet_layout_with_fc_layers(tmp_path, frame):
    """MDNet's own .mat: input RGB - 128, fc4 / fc5 stored as 3x3 / 1x1 convolutions."""
    layers = random_layers(1)
    rng = np.random.default_rng(2)
    fc4 = (rng.standard_normal((3, 3, 512, 512)) * 0.02).astype(np.float32), rng.standard_normal(512).astype(np.float32)
    fc5 = (rng.standard_normal((1, 1, 512, 512)) * 0.05).astype(np.float32), rng.standard_normal(512).astype(np.float32)
    entries = [("conv1", "conv", layers["conv1"]), ("conv2", "conv", layers["conv2"]),
               ("conv3", "conv", layers["conv3"]), ("fc4", "conv", fc4), ("fc5", "conv", fc5)]
    path = tmp_path / "mdnet_vot-otb.mat"
    savemat(path, {"layers": simplenn_layers(entries)})
    net = build_fdn_net(path).eval()
    with torch.no_grad():
        ours = net.features(as_input(frame))
        expected = reference_vggm(frame[:, :, ::-1].copy(), layers, [128.0] * 3).float()
        assert torch.allclose(ours, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
        # fc4 as a Linear on the flattened 3x3x512 RoI feature = the 3x3 convolution.
        roi = torch.randn(4, 512, 3, 3)
        conv = F.conv2d(roi, torch.from_numpy(fc4[0].transpose(3, 2, 0, 1)), torch.from_numpy(fc4[1]))
        assert torch.allclose(net.fc4[0](roi.flatten(1)), conv.flatten(1), atol=1e-4)
        hidden = torch.randn(4, 512)
        conv5 = F.conv2d(hidden[:, :, None, None], torch.from_numpy(fc5[0].transpose(3, 2, 0, 1)),
                         torch.from_numpy(fc5[1]))
        assert torch.allclose(net.fc5[1](hidden), conv5.flatten(1), atol=1e-4)


def test_py_mdnet_layout(tmp_path, frame):
    """py-MDNet saves {'shared_layers': state_dict} of a net fed RGB - 128."""
    torch.manual_seed(3)
    original = FDNNet(build_backbone("vggm", "random", norm="lrn")).eval()
    # py-MDNet's names: conv1.0.weight, ..., fc4.0.weight, fc5.1.weight
    shared = {k.removeprefix("backbone."): v for k, v in original.state_dict().items()
              if k.startswith(("backbone.conv", "fc4", "fc5"))}
    path = tmp_path / "mdnet_imagenet_vid.pth"
    torch.save({"shared_layers": shared}, path)
    net = build_fdn_net(path).eval()
    with torch.no_grad():
        expected = original.features(as_input(frame[:, :, ::-1].copy()))
        ours = net.features(as_input(frame))
        assert torch.allclose(ours, expected, atol=1e-4)
        assert torch.equal(net.fc4[0].weight, original.fc4[0].weight)
    # A bare py-MDNet state dict (no 'shared_layers' wrapper) is read the same way.
    torch.save(shared, tmp_path / "bare.pth")
    assert torch.equal(load_fdn_state(tmp_path / "bare.pth")["backbone.conv1.0.weight"], net.backbone.conv1[0].weight)


def test_our_export_round_trip(tmp_path, frame):
    torch.manual_seed(4)
    trained = FDNNet(domains=3)
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    trained.eval()
    torch.save(trained.state_dict(), tmp_path / "last.pt")
    export_weights(tmp_path / "last.pt", tmp_path / "fdn.pt", half=True)
    saved = torch.load(tmp_path / "fdn.pt", weights_only=True)
    assert not any(k.startswith("fc6.") for k in saved)  # domain branches stay behind
    assert saved["backbone.conv1.0.weight"].dtype == torch.float16
    assert detect_norm(saved) == "batch"
    net = build_fdn_net(tmp_path / "fdn.pt").eval()
    with torch.no_grad():
        x = as_input(frame)
        assert torch.allclose(net.features(x), trained.features(x), rtol=1e-2, atol=2e-2)


def test_weight_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_fdn_net(tmp_path / "missing.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        build_fdn_net(tmp_path / "junk.pth")
    torch.save({"something.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="conv1.0.weight"):
        build_fdn_net(tmp_path / "other.pth")
    savemat(tmp_path / "partial.mat", {"layers": simplenn_layers([("conv1", "conv", random_layers()["conv1"])])})
    with pytest.raises(WeightsError, match="conv2"):
        build_fdn_net(tmp_path / "partial.mat")


def test_pretrained_trunk_export_holds_the_fc_layers_and_loads_back(tmp_path, dev_dataset_dir, frame):
    """FDN on EfficientNet-Lite0 (stage5 dilated to stride 8): the frozen trunk stays the
    installed one, the file holds fc4 / fc5; the same file into VGG-M is refused."""
    from vtrack_core.training.fdn_train import FDNTrainer

    trainer = FDNTrainer(dev_dataset_dir, tmp_path, 1, backbone="efficientnet_lite0", tap="stage5", output_stride=8)
    trainer.domains = type("Domains", (), {"domains": 2})()
    model = trainer.build_model().eval()
    assert model.backbone.tap_strides["stage5"] == 8 and model.fc4[0].in_features == 112 * 9
    assert all(not p.requires_grad for p in model.backbone.parameters())
    groups = trainer.parameters(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]  # fc4-5, fc6: nothing of the frozen trunk
    torch.save(model.state_dict(), tmp_path / "best.pt")
    path = trainer.export(tmp_path / "best.pt", tmp_path / "fdn.pt")
    saved = torch.load(path, weights_only=True)
    assert "fc4.0.weight" in saved and not any(k.startswith(("backbone.", "fc6.")) for k in saved)
    net = build_fdn_net(path, backbone="efficientnet_lite0", tap="stage5", output_stride=8).eval()
    with torch.no_grad():
        x = as_input(frame)
        assert torch.allclose(net.features(x), model.features(x), atol=1e-5)
        assert torch.equal(net.fc4[0].weight, model.fc4[0].weight)
    with pytest.raises(WeightsError, match="backbone"):
        build_fdn_net(path)  # VGG-M
