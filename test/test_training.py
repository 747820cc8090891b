"""Training: the shared loop (resume, schedule, best weights), SiamFC pairs from the real
training sequences (cache, curation, labels of eq. 6, crops), an overfitting run, and
`vtrack train siamfc` end to end. Kept small: three short sequences, a few iterations."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vtrack_core.cli import main as vtrack_main
from vtrack_core.eval.datasets import Sequence, load_dataset
from vtrack_core.training.loop import (
    LoopConfig,
    TrainingError,
    best_epoch,
    geometric_lr,
    run_training,
)
from vtrack_core.training.data import Curation, usable_frames, video_of
from vtrack_core.training.siamfc_data import (
    SiamFCDataConfig,
    SiamFCPairs,
    build_cache,
    cache_paths,
    exemplar_side,
    make_labels,
    region_sequence,
)
from vtrack_core.training.siamfc_train import siamfc_loss, train_siamfc
from cli_runner import train_resume_and_refuse

SMALL = ["uav_wakeboard7", "vot_ball1", "dtb_Surfing06"]  # 67 + 105 + 106 frames


@pytest.fixture(scope="module")
def small_data(train_dataset_dir, tmp_path_factory) -> Path:
    """A dataset folder holding three short training sequences (links to the real ones)."""
    root = tmp_path_factory.mktemp("train_small")
    for name in SMALL:
        (root / name).symlink_to(train_dataset_dir / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("siamfc_cache")


@pytest.fixture(scope="module")
def sequences(small_data):
    return load_dataset(small_data)


@pytest.fixture(scope="module")
def built(sequences, cache_dir):
    started = time.perf_counter()
    cached = build_cache(sequences, cache_dir, SiamFCDataConfig(), progress_bar=False)
    return cached, time.perf_counter() - started


@pytest.fixture(scope="module")
def pairs(built):
    return SiamFCPairs(built[0], SiamFCDataConfig(), seed=0)


# --- cache and curation -------------------------------------------------------------------------
def test_cache_is_built_once_and_reused(built, sequences, cache_dir):
    cached, first_seconds = built
    assert [c.name for c in cached] == [s.name for s in sequences]
    assert all(c.crops.shape[1:] == (287, 287, 3) and c.crops.dtype == np.uint8 for c in cached)
    assert all(len(c.sizes) == len(c.frames) == len(c.crops) for c in cached)
    stamps = {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()}
    started = time.perf_counter()
    again = build_cache(sequences, cache_dir, SiamFCDataConfig(), progress_bar=False)
    assert time.perf_counter() - started < 0.5 < first_seconds
    assert [a.path for a in again] == [c.path for c in cached]
    assert {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == stamps  # nothing rewritten
    # A setting that changes the crops, or a changed sequence, names another cache entry.
    current = cache_paths(sequences[0], cache_dir, SiamFCDataConfig())
    assert cache_paths(sequences[0], cache_dir, SiamFCDataConfig(context=0.4)) != current
    changed = Sequence(sequences[0].name, sequences[0].frames, sequences[0].ground_truth + 1.0)
    assert cache_paths(changed, cache_dir, SiamFCDataConfig()) != current


def test_curation_rules_of_section_2_4():
    gt = np.array([
        [100, 100, 20, 20],   # ok (small: kept, min_area defaults to 0)
        [np.nan] * 4,         # absent
        [0.5, 100, 20, 20],   # 0.5 px from the left edge < 5 % of 20 px
        [1.5, 100, 20, 20],   # 1.5 px >= 1 px: ok
        [10, 10, 600, 330],   # area > 0.75^2 of 640 x 360
        [100, 100, 0, 20],    # empty
        [300, 150, 100, 80],  # ok, area 0.035 > 0.1^2
    ], dtype=float)
    sequence = Sequence("synthetic", [Path(f"{i}.jpg") for i in range(len(gt))], gt)
    assert usable_frames(sequence, (640, 360), Curation()).tolist() == [0, 3, 6]
    assert usable_frames(sequence, (640, 360), Curation(min_area=0.1 ** 2)).tolist() == [6]
    # SiamFC's data config carries the same rule (its cache key and provenance keep the fields).
    assert SiamFCDataConfig().curation == Curation()
    assert SiamFCDataConfig(min_area=0.1 ** 2).curation == Curation(min_area=0.1 ** 2)


def test_video_of_groups_parts_of_one_video():
    assert video_of("uav_car16_1") == video_of("uav_car16_2") == "uav_car16"
    assert video_of("Jogging.1") == "Jogging"
    assert video_of("uav_bike1") == "uav_bike1" and video_of("dtb_Surfing06") == "dtb_Surfing06"


# --- pairs and labels ---------------------------------------------------------------------------
def test_batch_shapes_and_dtypes(pairs):
    batch = pairs.batch(np.random.default_rng(3), 4)
    assert batch["exemplar"].shape == (4, 3, 127, 127)
    assert batch["search"].shape == (4, 3, 255, 255)
    assert batch["labels"].shape == batch["weights"].shape == (4, 1, 17, 17)
    assert all(v.dtype == torch.float32 for v in batch.values())
    for key in ("exemplar", "search"):
        assert 0.0 <= float(batch[key].min()) and float(batch[key].max()) <= 255.0
        assert float(batch[key].std()) > 5.0  # images, not blank fill
    assert set(torch.unique(batch["labels"]).tolist()) <= {-1.0, 1.0}


def test_labels_eq6_radius_and_balanced_weights(pairs):
    config = SiamFCDataConfig()
    labels, weights = make_labels(config)
    rows, cols = np.mgrid[0:17, 0:17]
    inside = 8 * np.hypot(rows - 8, cols - 8) <= 16  # k ||u - c|| <= R, k = 8, R = 16
    assert np.array_equal(labels == 1, inside) and inside.sum() == 13
    assert np.all(labels[~inside] == -1)
    assert weights[labels == 1].sum() == pytest.approx(0.5) and weights[labels == -1].sum() == pytest.approx(0.5)
    # The target 8 search px right of the centre: the positive disc moves one cell right.
    shifted, shifted_weights = make_labels(config, offset=(8.0, 0.0))
    assert np.array_equal(shifted == 1, 8 * np.hypot(rows - 8, cols - 9) <= 16)
    assert shifted_weights[shifted == 1].sum() == pytest.approx(0.5)
    # Sampled (augmented) batches: every map balanced the same way, positives near the centre.
    batch = pairs.batch(np.random.default_rng(11), 12)
    for labels_map, weights_map in zip(batch["labels"][:, 0].numpy(), batch["weights"][:, 0].numpy()):
        for cls in (1.0, -1.0):
            if (labels_map == cls).any():
                assert weights_map[labels_map == cls].sum() == pytest.approx(0.5, abs=1e-5)
        if (labels_map == 1).any():
            rows_pos, cols_pos = np.nonzero(labels_map == 1)  # shift <= 4 px = half a cell
            assert 9 <= len(rows_pos) <= 16 and np.all(np.hypot(rows_pos - 8, cols_pos - 8) < 3)


def test_pair_sampling_negatives_gap_and_stills(pairs):
    rng = np.random.default_rng(0)
    negatives = stills = 0
    draws = 4000
    for _ in range(draws):
        (zs, zi), (xs, xi), negative = pairs.sample_refs(rng)
        if negative:
            negatives += 1
            assert video_of(pairs.sequences[zs].name) != video_of(pairs.sequences[xs].name)
        else:
            assert zs == xs
            gap = abs(int(pairs.sequences[zs].frames[zi]) - int(pairs.sequences[xs].frames[xi]))
            assert gap <= pairs.config.max_gap
            stills += gap == 0
    assert negatives / draws == pytest.approx(0.25, abs=0.03)
    assert stills / draws == pytest.approx(0.75 * pairs.config.still_prob, abs=0.02)
    z, x, labels, weights = pairs.make_pair((0, 0), (1, 5), negative=True, rng=rng)
    assert np.all(labels == -1) and np.allclose(weights, 0.5 / 289)


def test_region_pairs_are_textured_still_pairs_of_random_boxes(sequences, built, cache_dir):
    """Region boxes: reproducible, every one kept by the curation rules, sized like the
    sequence's targets (up to region_scale either way); region pairs are still pairs of
    region crops only, mostly textured, at region_prob of the draws; tracked pairs never
    touch region crops."""
    config = SiamFCDataConfig(region_prob=0.3)
    regions = []
    for sequence in sequences:
        size = sequence.image(0).shape[1::-1]
        boxes = region_sequence(sequence, size, config)
        again = region_sequence(sequence, size, config)
        assert boxes.name == sequence.name + "#regions"
        np.testing.assert_array_equal(boxes.ground_truth, again.ground_truth)
        assert len(usable_frames(boxes, size, config.curation)) == len(sequence)
        gt_side = np.sqrt(np.prod(sequence.ground_truth[sequence.valid_mask(), 2:], axis=1))
        side = np.sqrt(np.prod(boxes.ground_truth[:, 2:], axis=1))
        assert side.min() >= gt_side.min() / config.region_scale - 1e-6
        assert side.max() <= gt_side.max() * config.region_scale + 1e-6
        assert not np.allclose(boxes.ground_truth, sequence.ground_truth[:, :4], atol=5)  # not the target
        regions.append(boxes)
    cached_regions = build_cache(regions, cache_dir, config, progress_bar=False)
    pairs = SiamFCPairs(built[0], config, seed=0, regions=cached_regions)
    tracked = len(built[0])
    rng = np.random.default_rng(1)
    draws, region_draws, textured = 3000, 0, 0
    for _ in range(draws):
        (zs, zi), (xs, xi), negative = pairs.sample_refs(rng)
        if zs >= tracked or xs >= tracked:
            assert (zs, zi) == (xs, xi) and not negative
            region_draws += 1
            textured += pairs.box_std(zs, zi) >= config.region_min_std
    assert region_draws / draws == pytest.approx(config.region_prob, abs=0.03)
    assert textured / region_draws > 0.8
    assert len(pairs) == sum(len(c) for c in built[0])  # an epoch's size counts tracked frames only
    z, x, labels, _ = pairs.make_pair((tracked, 0), (tracked, 0), augment=False)
    assert np.abs(x[64:191, 64:191] - z).max() < 1.0 and labels[8, 8] == 1
    with pytest.raises(ValueError, match="region_prob"):
        SiamFCPairs(built[0], SiamFCDataConfig(region_prob=1.5))
    with pytest.raises(ValueError, match="no region crops"):
        SiamFCPairs(built[0], SiamFCDataConfig(region_prob=0.3))


def test_exemplar_shows_the_target(pairs, sequences):
    """The un-augmented exemplar is the 127 px crop of (w+2p) x (h+2p) around the target:
    compare with a crop cut another way (cv2.getRectSubPix at the image's resolution, then
    cv2.resize)."""
    for seq_index, sequence in enumerate(sequences):
        cached = pairs.sequences[seq_index]
        for slot in (0, len(cached) // 2, len(cached) - 1):
            frame = int(cached.frames[slot])
            z, x, _, _ = pairs.make_pair((seq_index, slot), (seq_index, slot), augment=False)
            image = sequence.image(frame)
            bx, by, bw, bh = sequence.ground_truth[frame]
            side = max(int(round(exemplar_side(bw, bh))), 2)
            patch = cv2.getRectSubPix(image, (side, side), (bx + bw / 2, by + bh / 2))
            reference = cv2.resize(patch, (127, 127), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            inner = slice(16, 111)  # the target and its nearest context, clear of any padding
            a = z[inner, inner].ravel() - z[inner, inner].mean()
            b = reference[inner, inner].ravel() - reference[inner, inner].mean()
            ncc = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            assert ncc > 0.95, (sequence.name, frame, ncc)
            # Same pixel scale in both images: the search image's centre is the exemplar.
            assert np.abs(x[64:191, 64:191] - z).max() < 1.0


def test_augmented_search_label_follows_the_target(pairs):
    """Still pairs, geometric augmentation only: where the exemplar matches in the search
    image is where the label's positive disc is centred."""
    config = SiamFCDataConfig(colour_jitter=0.0, blur_prob=0.0, grey_prob=0.0, scale_jitter=0.0, max_shift=8.0)
    plain = SiamFCPairs(pairs.sequences, config)
    rng = np.random.default_rng(5)
    for seq_index in range(len(plain.sequences)):
        z, x, labels, _ = plain.make_pair((seq_index, 3), (seq_index, 3), rng=rng)
        match = cv2.matchTemplate(x, z, cv2.TM_CCOEFF_NORMED)  # 129 x 129, centre 64
        peak_y, peak_x = np.unravel_index(int(np.argmax(match)), match.shape)
        rows, cols = np.nonzero(labels == 1)
        centre = np.array([cols.mean(), rows.mean()]) * 8 - 64  # label centre, search px from the centre
        assert np.allclose(centre, [peak_x - 64, peak_y - 64], atol=3.0), (centre, peak_x, peak_y)


# --- the shared loop ----------------------------------------------------------------------------
class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean(dim=(2, 3)))


def toy_batches(epoch):
    rng = np.random.default_rng([7, epoch])
    while True:
        x = torch.from_numpy(rng.normal(size=(8, 1, 6, 6)).astype(np.float32))
        yield x, x.mean(dim=(1, 2, 3)).unsqueeze(1) * 3.0


def toy_loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def run_toy(out, epochs, resume=False, validate=None, channels_last=False):
    torch.manual_seed(0)
    config = LoopConfig(epochs=epochs, iterations=5, seed=1, progress=False, monitor="score" if validate else None,
                        channels_last=channels_last)
    return run_training(Toy(), toy_loss, toy_batches, out, config, geometric_lr(1e-2, 1e-5, 3),
                        validate=validate, resume=resume)


def test_loop_resume_gives_the_uninterrupted_result(tmp_path):
    straight = run_toy(tmp_path / "a", 3)
    run_toy(tmp_path / "b", 2)
    checkpoint = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and {"model", "optimizer", "history"} <= set(checkpoint)
    resumed = run_toy(tmp_path / "b", 3, resume=True)
    assert resumed.resumed_from == 2 and [e["epoch"] for e in resumed.history] == [1, 2, 3]
    a = torch.load(straight.last_weights, weights_only=True)
    b = torch.load(resumed.last_weights, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["loss"] for e in straight.history] == [e["loss"] for e in resumed.history]
    assert [e["lr"] for e in straight.history] == pytest.approx([1e-2, 1e-2 * 10 ** -1.5, 1e-5])
    history = json.loads((tmp_path / "b" / "history.json").read_text())
    assert len(history["epochs"]) == 3 and (tmp_path / "b" / "curves.png").stat().st_size > 1000
    with pytest.raises(TrainingError, match="resume"):
        run_toy(tmp_path / "a", 3)  # an existing run is never silently overwritten


def test_loop_channels_last_trains_the_same_model(tmp_path):
    nchw = run_toy(tmp_path / "a", 1)
    nhwc = run_toy(tmp_path / "b", 1, channels_last=True)
    a = torch.load(nchw.last_weights, weights_only=True)
    b = torch.load(nhwc.last_weights, weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_loop_keeps_the_best_validated_weights(tmp_path):
    seen = {}

    def validate(model, epoch, weights_path):
        seen[epoch + 1] = torch.load(weights_path, weights_only=True)
        return {"score": [0.2, 0.9, 0.5][epoch]}

    result = run_toy(tmp_path, 3, validate=validate)
    assert result.best_epoch == 2
    best = torch.load(result.best_weights, weights_only=True)
    assert all(torch.equal(best[k], seen[2][k]) for k in best)
    assert best_epoch(result.history, "score", "min") == 1
    assert [e["val"]["score"] for e in result.history] == [0.2, 0.9, 0.5]


def test_siamfc_loss_decreases_when_overfitting(pairs, tmp_path):
    fixed = pairs.batch(np.random.default_rng(1), 4)
    torch.manual_seed(0)
    from vtrack_core.trackers.siamfc import SiamFCNet

    result = run_training(SiamFCNet(), siamfc_loss, lambda epoch: iter(lambda: fixed, None), tmp_path,
                          LoopConfig(epochs=1, iterations=10, progress=False), lambda epoch: 1e-2)
    trace = result.history[0]["loss_trace"]
    assert trace[-1] < 0.8 * trace[0], trace
    # At initialisation the scores are near 0: loss ~ log 2 per class weight actually present.
    assert 0.3 < trace[0] < 1.5


def test_train_siamfc_resume_matches_uninterrupted(small_data, cache_dir, tmp_path):
    common = dict(pairs_per_epoch=4, batch_size=2, val_sequences=[], cache_dir=cache_dir, progress=False,
                  train_sequences=["uav_wakeboard7", "dtb_Surfing06"])
    train_siamfc(small_data, tmp_path / "a", epochs=2, **common)
    train_siamfc(small_data, tmp_path / "b", epochs=1, **common)
    train_siamfc(small_data, tmp_path / "b", epochs=2, resume=True, **common)
    a = torch.load(tmp_path / "a" / "siamfc.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "siamfc.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the command line ---------------------------------------------------------------------------
def test_cli_train_writes_everything_and_resumes(small_data, cache_dir, tmp_path):
    out = tmp_path / "run"
    options = ["--data", str(small_data), "--out", str(out), "--pairs-per-epoch", "16",
               "--batch-size", "4", "--val-sequences", "vot_ball1", "--max-val-frames", "8",
               "--cache-dir", str(cache_dir), "--threads", "2", "--no-progress"]
    provenance = train_resume_and_refuse("siamfc", out, options, iterations=4, timeout=300)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert all(math.isfinite(e["loss"]) for e in history) and history[1]["lr"] == pytest.approx(1e-5)
    assert provenance["val_sequences"] == ["vot_ball1"]
    assert {s["name"] for s in provenance["train_sequences"]} == {"uav_wakeboard7", "dtb_Surfing06"}
    assert len(provenance["val_auc_per_epoch"]) == 2 and len(provenance["runs"]) == 2
    assert provenance["seed"] == 0 and provenance["pairs_per_epoch"] == 16 and "commit" in provenance["git"]
    assert provenance["best_val_auc"] == max(provenance["val_auc_per_epoch"])

    weights = torch.load(out / "siamfc.pt", weights_only=True)
    assert weights["backbone.conv1.0.weight"].dtype == torch.float16
    assert weights["head.scale"].dtype == weights["head.bias"].dtype == torch.float32  # kept for the tracker
    assert not any(k.endswith("num_batches_tracked") for k in weights)
    from vtrack_core import Box, create_tracker

    tracker = create_tracker("siamfc", backbone="alexnet", weights=str(out / "siamfc.pt"), device="cpu")
    assert next(tracker.net.parameters()).dtype == torch.float32
    sequence = load_dataset(small_data, ["vot_ball1"])[0]
    tracker.init(sequence.image(0), Box.from_xywh(sequence.ground_truth[0]))
    assert tracker.update(sequence.image(1)).box.is_finite()


def test_cli_train_unknown_tracker(capsys, tmp_path):
    assert vtrack_main(["train", "kcf", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    assert "trainable trackers: fdn, rar, siamfc" in capsys.readouterr().err
