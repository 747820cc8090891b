"""SiamFC: Table 1 shapes, the shared crop / correlation ops, and the weight loaders for the
public formats (files generated here in those layouts)."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.io import savemat

from vtrack_core import Box, create_tracker
from vtrack_core.trackers.siamfc import SiamFCNet, cross_correlate, load_siamfc_weights
from vtrack_core.weights import WeightsError


@pytest.fixture(scope="module")
def frame(dev_dataset_dir):
    return cv2.imread(str(dev_dataset_dir / "Couple" / "img" / "0001.jpg"))


def random_net(seed: int = 0) -> SiamFCNet:
    torch.manual_seed(seed)
    net = SiamFCNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        net.head.bias.fill_(0.3)
    return net.eval()


def test_table1_shapes_and_no_padding():
    net = SiamFCNet().eval()
    with torch.no_grad():
        assert net.embed(torch.zeros(1, 3, 127, 127)).shape == (1, 256, 6, 6)
        assert net.embed(torch.zeros(2, 3, 255, 255)).shape == (2, 256, 22, 22)
        assert net(torch.zeros(1, 3, 127, 127), torch.zeros(3, 3, 255, 255)).shape == (3, 1, 17, 17)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(0, 0)] * 5
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 5  # after every conv
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 4  # all but conv5


def test_grouped_correlation_equals_one_by_one():
    torch.manual_seed(0)
    exemplars, searches = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 22, 22)
    batched = cross_correlate(exemplars, searches)
    for i in range(4):
        assert torch.allclose(batched[i], F.conv2d(searches[i : i + 1], exemplars[i : i + 1])[0], atol=1e-4)
    assert cross_correlate(exemplars[:1], searches).shape == (4, 1, 17, 17)
    # One exemplar over the scales (tracking): the depthwise form is the same correlation.
    for count in (1, 3):
        one = cross_correlate(exemplars[:1], searches[:count])
        torch.testing.assert_close(one, F.conv2d(searches[:count], exemplars[:1]), atol=1e-4, rtol=1e-5)


def test_loads_siamfc_pytorch_layout(tmp_path):
    """siamfc-pytorch: 'backbone.convN.{0,1}.*', no BN after conv5, no head parameters; its
    network reads RGB and its batch norms use eps 1e-6."""
    source = random_net(1)
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-6
    source.backbone.conv4[1].running_var[:192] = 2e-5  # small enough for eps to matter
    eps_ignored = SiamFCNet()
    eps_ignored.load_state_dict(source.state_dict())
    state = {k: v for k, v in source.state_dict().items() if k.startswith("backbone.") and not k.startswith("backbone.conv5.1")}
    path = tmp_path / "siamfc_alexnet_e50.pth"
    torch.save(state, path)
    net = SiamFCNet()
    load_siamfc_weights(net, path)
    net.eval()
    bgr = torch.rand(1, 3, 255, 255) * 255
    with torch.no_grad():
        rgb = bgr[:, [2, 1, 0]]
        conv5_in = source.backbone.conv4(source.backbone.conv3(source.backbone.conv2(source.backbone.conv1(rgb))))
        expected = source.backbone.conv5[0](conv5_in)  # no BN after conv5 in that layout
        def error(output):
            return float((output - expected).abs().max() / expected.abs().max())

        assert error(net.embed(bgr)) < 1e-5
        assert error(net.embed(rgb)) > 1e-2  # the swap matters
        eps_ignored.eval()
        stem = eps_ignored.backbone  # the same weights read with our eps: wrong
        wrong_eps = stem.conv5[0](stem.conv4(stem.conv3(stem.conv2(stem.conv1(rgb)))))
        assert error(wrong_eps) > 1e-3  # ... and so does the eps
    assert net.head.scale.item() == pytest.approx(1e-3) and net.head.bias.detach().item() == 0.0


def _to_matconvnet(net: SiamFCNet, adjust=(2.0, 0.5, 0.1, 4.0)) -> dict:
    """Our network written the way the authors' MatConvNet release stores it (RGB input)."""
    params = {}
    for index in range(1, 6):
        block = getattr(net.backbone, f"conv{index}")
        weight = block[0].weight.detach().numpy()
        if index == 1:
            weight = weight[:, [2, 1, 0]]  # their conv1 reads RGB
        params[f"br_conv{index}f"] = weight.transpose(2, 3, 1, 0)  # -> H x W x Cin x Cout
        params[f"br_conv{index}b"] = block[0].bias.detach().numpy()
        bn = block[1]
        sigma = np.sqrt(bn.running_var.numpy() + bn.eps)
        params[f"br_bn{index}m"] = bn.weight.detach().numpy()
        params[f"br_bn{index}b"] = bn.bias.detach().numpy()
        params[f"br_bn{index}x"] = np.stack([bn.running_mean.numpy(), sigma], axis=1)
    gain, bias, mean, sigma = adjust
    params["fin_adjust_bnm"] = np.array([gain], np.float32)
    params["fin_adjust_bnb"] = np.array([bias], np.float32)
    params["fin_adjust_bnx"] = np.array([[mean, sigma]], np.float32)
    return params


def test_loads_authors_matconvnet_layout(tmp_path):
    source = random_net(2)
    params = _to_matconvnet(source)
    entries = np.zeros(len(params), dtype=[("name", object), ("value", object)])
    for i, (name, value) in enumerate(params.items()):
        entries[i] = (name, value.astype(np.float32))
    path = tmp_path / "2016-08-17.net.mat"
    savemat(str(path), {"net": {"params": entries}})

    net = SiamFCNet()
    load_siamfc_weights(net, path)
    net.eval()
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(2, 3, 255, 255) * 255
    gain, bias, mean, sigma = 2.0, 0.5, 0.1, 4.0
    with torch.no_grad():
        raw = cross_correlate(source.embed(z), source.embed(x))
        expected = gain * (raw - mean) / sigma + bias  # their final 'adjust' batch norm
        assert torch.allclose(net(z, x), expected, rtol=1e-3, atol=1e-2)

    del params["br_conv3f"]
    entries = np.zeros(len(params), dtype=[("name", object), ("value", object)])
    for i, (name, value) in enumerate(params.items()):
        entries[i] = (name, value.astype(np.float32))
    broken = tmp_path / "broken.mat"
    savemat(str(broken), {"net": {"params": entries}})
    with pytest.raises(WeightsError, match="br_conv3f"):
        load_siamfc_weights(SiamFCNet(), broken)


def test_weights_errors_are_clear(tmp_path):
    with pytest.raises(WeightsError, match="no weights at .*absent.pt.*vtrack train siamfc"):
        create_tracker("siamfc", backbone="alexnet", weights=str(tmp_path / "absent.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        create_tracker("siamfc", backbone="alexnet", weights=str(bad))
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="does not fit SiamFC"):
        create_tracker("siamfc", backbone="alexnet", weights=str(tmp_path / "other.pt"))


def test_tracker_runs_batched_scales_and_reports_probability(tmp_path, frame):
    path = tmp_path / "random.pt"
    torch.save(random_net(3).state_dict(), path)
    tracker = create_tracker("siamfc", backbone="alexnet", weights=str(path), device="cpu")
    box = Box(51, 47, 25, 62)
    tracker.init(frame, box)
    result = tracker.update(frame)
    assert 0.0 <= result.confidence <= 1.0
    # The same frame again: the search is centred on the target and the cosine window
    # favours no motion; the box stays (within the 8/16-pixel response resolution).
    assert abs(result.box.cx - box.cx) <= 8 and abs(result.box.cy - box.cy) <= 8
    assert result.box.w == pytest.approx(box.w, rel=0.05)


@pytest.mark.slow
def test_committed_weights_track_real_sequences_as_measured(dev_dataset_dir):
    """The default SiamFC (MobileNetV2 trunk, vtrack_core/weights/siamfc_mobilenet_v2.md) on
    dev sequences it never saw: AUC where `vtrack eval` measured it (Crossing 0.712, Human7
    0.564; single thread)."""
    from vtrack_core.eval.datasets import load_dataset
    from vtrack_core.eval.metrics import score
    from vtrack_core.eval.runner import run_sequence

    torch.set_num_threads(1)
    measured = {"Crossing": 0.712, "Human7": 0.564}
    for sequence in load_dataset(dev_dataset_dir, names=list(measured)):
        result = run_sequence(create_tracker("siamfc", device="cpu"), sequence)
        assert result.failures == 0
        auc = score(result.boxes, sequence.ground_truth).auc
        assert auc == pytest.approx(measured[sequence.name], abs=0.03), sequence.name
        confidences = result.confidences[1:]
        assert ((confidences >= 0) & (confidences <= 1)).all()


def test_scale_changes_are_penalised_for_unsure_negative_peaks_too():
    from vtrack_core.ops.scales import penalise_scale_change

    penalties = torch.tensor([0.9745, 1.0, 0.9745])
    for peaks in ([2.0, 2.02, 2.0], [-2.18, -2.19, -2.18], [-0.01, 0.0, -0.01]):
        assert int(torch.argmax(penalise_scale_change(torch.tensor(peaks), penalties))) == 1, peaks
    assert int(torch.argmax(penalise_scale_change(torch.tensor([2.2, 2.0, 1.0]), penalties))) == 0  # a clear win still counts
    assert torch.allclose(penalise_scale_change(torch.tensor([3.0, 1.0, 2.0]), penalties), torch.tensor([3.0, 1.0, 2.0]) * penalties)


def test_target_gone_box_keeps_its_size(frame, dev_dataset_dir):
    """With the target gone (a blank frame) every peak is a low, negative logit: the size must
    stay, not drift a scale step per frame (it grew 6 % in 5 frames with the plain product)."""
    tracker = create_tracker("siamfc", device="cpu")
    box = Box(*np.loadtxt(dev_dataset_dir / "Couple" / "groundtruth_rect.txt", delimiter=",", max_rows=1))
    tracker.init(frame, box)
    blank = np.empty_like(frame)
    blank[:] = frame.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    for _ in range(5):
        result = tracker.update(blank)
    assert (result.box.w, result.box.h) == pytest.approx((box.w, box.h), rel=1e-6)
    assert result.confidence < 0.5


# --- the pretrained-trunk variant ----------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_pretrained_trunk_gives_the_papers_score_map_centred(backbone):
    """Exemplar features centre-cropped to 8 cells, search features to 24: the paper's 17 x 17
    map, and its centre cell is a target at the search crop's centre: the exemplar crop's
    middle sits as far from the exemplar's centre as the middle of the search window the
    centre cell compares it with sits from the search's centre (no position bias)."""
    net = SiamFCNet(backbone=backbone, trunk_weights=None).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 127, 127) * 255, torch.rand(2, 3, 255, 255) * 255).shape == (2, 1, 17, 17)
    trunk, tap = net.backbone.trunk, net.backbone.tap
    exemplar_cells, search_cells = net.crops
    z, x = trunk.geometry(tap, 127), trunk.geometry(tap, 255)
    exemplar_middle = z.offset + z.stride * (exemplar_cells.start + (exemplar_cells.stop - exemplar_cells.start - 1) / 2)
    window_middle = x.offset + x.stride * (search_cells.start + 8 + (exemplar_cells.stop - exemplar_cells.start - 1) / 2)
    assert exemplar_middle - 127 / 2 == pytest.approx(window_middle - 255 / 2)
    assert abs(exemplar_middle - 127 / 2) <= z.stride / 2  # and the crop is the target's middle


def test_pretrained_trunk_export_holds_only_what_trained_and_loads_back(tmp_path, dev_dataset_dir):
    from vtrack_core.training.siamfc_train import SiamFCTrainer

    trainer = SiamFCTrainer(dev_dataset_dir, tmp_path, 1, backbone="mobilenet_v2")
    model = trainer.build_model()
    assert trainer.frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in trainer.frozen)
    groups = trainer.parameters(model)
    assert len(groups) == 1 and all(p.requires_grad for p in groups[0]["params"])  # frozen trunk: adjust + head
    with torch.no_grad():
        model.backbone.adjust[0].weight.mul_(1.5)
    torch.save(model.state_dict(), tmp_path / "best.pt")
    path = trainer.export(tmp_path / "best.pt", tmp_path / "siamfc.pt")
    saved = torch.load(path, weights_only=True)
    assert saved and not any(k.startswith("backbone.trunk.") for k in saved)
    loaded = SiamFCNet(backbone="mobilenet_v2", trunk_weights=None)
    load_siamfc_weights(loaded, path)
    assert torch.equal(loaded.backbone.adjust[0].weight, model.backbone.adjust[0].weight)
    for name, value in loaded.backbone.trunk.state_dict().items():  # the frozen trunk: the installed weights
        assert torch.equal(value, model.backbone.trunk.state_dict()[name]), name
    create_tracker("siamfc", backbone="mobilenet_v2", weights=str(path), device="cpu")
    with pytest.raises(WeightsError, match="set `backbone`"):
        create_tracker("siamfc", backbone="alexnet", weights=str(path), device="cpu")  # an AlexNet network
    fine_tuning = SiamFCTrainer(dev_dataset_dir, tmp_path, 1, backbone="mobilenet_v2", trunk_lr_scale=0.1)
    model = fine_tuning.build_model()
    groups = fine_tuning.parameters(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    assert not model.backbone.trunk.features[1].conv[1].training or not model.training  # stem frozen, BN in eval


def test_feature_pyramid_equals_the_crops_at_factor_1_and_follows_a_rescaled_image(dev_dataset_dir):
    """scale_mode=features: the scale-1 search features are the crop's own, and the features
    resampled for a crop 1.1 x larger are close to those of that crop itself (closer than
    the unscaled ones are: CNN features are not scale-equivariant, so not equal)."""
    from vtrack_core.ops.crops import crop_and_resize, image_to_tensor

    net = SiamFCNet(backbone="mobilenet_v2", trunk_weights=None).eval()
    frame = image_to_tensor(cv2.imread(str(dev_dataset_dir / "David" / "img" / "0001.jpg")), torch.device("cpu"))
    centre = torch.tensor([160.0, 110.0])
    with torch.no_grad():
        base = net.embed(crop_and_resize(frame, centre, torch.tensor([200.0]), 255))
        pyramid = net.scaled_search(base, (1.0, 1.1), 255)
        assert torch.allclose(pyramid[0], net.embed(crop_and_resize(frame, centre, torch.tensor([200.0]), 255), False)[0],
                              atol=1e-5)
        larger = net.embed(crop_and_resize(frame, centre, torch.tensor([220.0]), 255), False)[0]
    error = (pyramid[1] - larger).norm() / larger.norm()
    assert error < 0.75 * (pyramid[0] - larger).norm() / larger.norm(), float(error)  # measured: 0.31 against 0.50
