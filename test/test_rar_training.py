"""RAR end-to-end training on the real training sequences: the sampled patches and labels,
learning through the closed-form correlation layer, and `vtrack train rar` end to end
(kept small)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vtrack_core.boxes import Box
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.trackers.rar import RARConfig, RARNet, RARTracker
from vtrack_core.training.rar_train import RARDataConfig, RARLoss, RARSamples
from cli_runner import train_resume_and_refuse

SEQUENCES = ["vot_car1", "uav_boat1"]


@pytest.fixture(scope="module")
def samples(train_dataset_dir) -> RARSamples:
    return RARSamples(load_dataset(train_dataset_dir, SEQUENCES), RARDataConfig(), seed=0)


def test_patches_and_labels_follow_the_target(samples):
    config = samples.config
    rng = np.random.default_rng(3)
    plain = samples.sample(rng, augment=False)
    size, mid = samples.size, (samples.size - 1) / 2
    assert plain["template"].shape == (3, config.input_size, config.input_size)
    assert plain["context"].shape == (config.context_patches, 3, config.input_size, config.input_size)
    assert plain["search"].shape == (config.search_frames, 3, config.input_size, config.input_size)
    # Without augmentation the target sits in the middle of every search patch ...
    for label in plain["labels"]:
        row, col = divmod(int(label.argmax()), size)
        assert (row, col) == (round(mid), round(mid)) and label.max() == pytest.approx(1.0)
    # ... and the context patches show other content than the template (they are one target
    # size away), while the template's centre holds the target.
    differences = [np.abs(c - plain["template"]).mean() for c in plain["context"]]
    assert min(differences) > 5.0
    # With augmentation the label's peak moves with the target (by up to max_shift of the side).
    shifts = []
    for seed in range(12):
        item = samples.sample(np.random.default_rng(seed))
        for label in item["labels"]:
            row, col = divmod(int(label.argmax()), size)
            shifts.append(max(abs(row - mid), abs(col - mid)))
    limit = config.max_shift * size + 1
    assert max(shifts) <= limit and np.mean(np.array(shifts) > 0.5) > 0.5


def test_search_frames_come_after_the_template_in_order(samples):
    """The LSTM must see a clip in time order: with a fixed seed, recompute the frame picks."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        index = int(rng.choice(len(samples.sequences), p=samples._sequence_prob))
        usable = samples.frames[index]
        start = usable[int(rng.integers(len(usable)))]
        later = usable[(usable > start) & (usable <= start + samples.config.max_gap)]
        if len(later) == 0:
            continue
        picks = np.sort(rng.choice(later, size=samples.config.search_frames, replace=len(later) < 2))
        assert (picks > start).all() and (np.diff(picks) >= 0).all()


def test_the_loss_learns_through_the_correlation_layer(samples):
    """A few SGD steps on one batch lower eq. 8: gradients reach the backbone through the FFT
    solve of eq. 7."""
    torch.manual_seed(0)
    net = RARNet("light")
    loss_fn = RARLoss(samples.size, samples.label_sigma_cells())
    batch = samples.batch(np.random.default_rng(0), 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = loss_fn(net, batch)
        optimizer.zero_grad()
        loss.backward()
        assert net.backbone.conv1.weight.grad.abs().sum() > 0
        assert net.attention[0].lstm.hidden_conv.weight.grad.abs().sum() > 0  # through the clip's LSTM
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-3:]) < 0.8 * losses[0]


def test_cli_train_rar_resumes_and_writes_loadable_weights(train_dataset_dir, tmp_path, dev_dataset_dir):
    out = tmp_path / "rar"
    options = ["--data", str(train_dataset_dir), "--out", str(out), "--train-sequences", *SEQUENCES,
               "--val-sequences", "uav_wakeboard7", "--max-val-frames", "4", "--samples-per-epoch", "2",
               "--batch-size", "2", "--threads", "2", "--no-progress", "--backbone", "light"]
    provenance = train_resume_and_refuse("rar", out, options, iterations=1, resume_options=["--clip-frames", "3"])
    assert [d["name"] for d in provenance["train_sequences"]] == SEQUENCES
    assert provenance["val_sequences"] == ["uav_wakeboard7"] and provenance["backbone"] == "light"
    assert None not in provenance["val_auc_per_epoch"] and provenance["lr"]["start"] == 1e-2  # from scratch
    assert provenance["data"]["search_frames"] == 3
    # The exported weights drive the real tracker.
    sequence = load_dataset(dev_dataset_dir, ["Crossing"])[0]
    tracker = RARTracker(RARConfig(backbone="light", weights=str(out / "rar.pt"), device="cpu"))
    tracker.init(sequence.image(0), Box.from_xywh(sequence.ground_truth[0]))
    result = tracker.update(sequence.image(1))
    assert result.box.is_finite() and 0.0 <= result.confidence <= 1.0


def test_stages_frozen_with_imagenet_normalise_as_the_tracker_will():
    """Training with ImageNet weights freezes the first stages: their batch norm must use the
    stored statistics in training too, or training sees other features than tracking."""
    from vtrack_core.trackers.rar import RARNet
    from vtrack_core.training.rar_train import FROZEN_WITH_IMAGENET

    torch.manual_seed(0)
    model = RARNet("light")
    model.backbone.freeze(up_to=FROZEN_WITH_IMAGENET)
    prefixes = ("backbone.conv1", "backbone.bn1", "backbone.layer1")  # the stem and conv2_x
    images = torch.rand(2, 3, 127, 127) * 255
    model.eval()
    with torch.no_grad():
        expected = model.backbone.layer1(model.backbone.maxpool(model.backbone.relu(model.backbone.bn1(model.backbone.conv1(images)))))
    stored = model.backbone.bn1.running_mean.clone()
    model.train()
    frozen = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n.startswith(prefixes)]
    others = [m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and not n.startswith(prefixes)]
    assert frozen and all(not dict(model.named_modules())[n].training for n in frozen)
    assert others and all(m.training for m in others)
    with torch.no_grad():
        got = model.backbone.layer1(model.backbone.maxpool(model.backbone.relu(model.backbone.bn1(model.backbone.conv1(images)))))
        model(images)
    assert torch.allclose(got, expected)
    assert torch.equal(model.backbone.bn1.running_mean, stored)
