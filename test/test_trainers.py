"""The trainer registry and `vtrack train`'s options: the command line's defaults are the
trainers' own, options of another tracker are refused, the help lists every trainable
tracker, the shared export, and a fifth (toy) tracker trained through the same registry
and command line without a line of copied code (test/toy_trainer.py)."""
from __future__ import annotations

import json

import pytest
import torch

from vtrack_core.cli import main as vtrack_main
from vtrack_core.training import TRAINABLE, UnknownTrainerError, trainer_class
from vtrack_core.training.common import export_weights
from vtrack_core.training.options import settings_from, trainer_parser
from vtrack_core.training.siamfc_data import SiamFCDataConfig
from cli_runner import run_vtrack, train_resume_and_refuse

TOY = {"toy": "toy_trainer:ToyTrainer"}


def parsed(name: str, *options: str):
    trainer = trainer_class(name)
    namespace = trainer_parser(trainer).parse_args([name, "--data", "D", "--epochs", "2", "--out", "O", *options])
    return trainer(**settings_from(trainer, namespace))


@pytest.mark.parametrize("name", ["siamfc", "fdn", "rar"])
def test_command_line_defaults_are_the_trainers(name):
    """Options left out keep the trainer's field defaults (declared once, there)."""
    assert parsed(name) == trainer_class(name)("D", "O", 2)


def test_options_fill_the_trainers_settings():
    siamfc = parsed("siamfc", "--lr", "1e-3", "1e-4", "--no-progress", "--region-prob", "0.3", "--val-sequences",
                    "--pairs-per-epoch", "9", "--half", "--threads", "1")
    assert siamfc.lr == (1e-3, 1e-4) and siamfc.progress is False and siamfc.half and siamfc.threads == 1
    assert siamfc.data_config == SiamFCDataConfig(region_prob=0.3) and siamfc.val_sequences == []
    assert siamfc.pairs_per_epoch == 9 and siamfc.max_val_frames == 150 and siamfc.batch_size == 8
    rar = parsed("rar", "--clip-frames", "3", "--backbone", "resnet50")
    assert rar.data_config.search_frames == 3 and rar.backbone == "resnet50"
    assert rar.learning_rates() == (1e-2, 1e-3)  # from scratch
    assert parsed("rar", "--backbone-weights", "w.pth").learning_rates() == (1e-3, 1e-4)  # the paper's
    fdn = parsed("fdn", "--roi-method", "pool", "--max-val-frames", "5")
    assert fdn.roi_method == "pool" and fdn.max_val_frames == 5 and fdn.lr == (1e-4, 1e-4)
    with pytest.raises(ValueError, match="epochs, pairs_per_epoch and batch_size must be >= 1"):
        trainer_class("siamfc")("D", "O", 1, batch_size=0)
    assert trainer_class("fdn")("D", "O", 1, data_config=None).data_config == trainer_class("fdn").default("data_config")


def test_options_of_another_tracker_are_refused(capsys, tmp_path):
    args = ["--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")]
    assert vtrack_main(["train", "fdn", *args, "--batch-size", "4"]) == 2
    assert "--batch-size (an option of rar, siamfc) does not apply to fdn" in capsys.readouterr().err
    assert vtrack_main(["train", "siamfc", *args, "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    # The shared options may stand before the name; the name is still found (and checked).
    assert vtrack_main(["train", *args, "kcf"]) == 2
    assert "cannot train 'kcf'; trainable trackers: fdn, rar, siamfc" in capsys.readouterr().err
    assert vtrack_main(["train"]) == 2 and "name the tracker to train" in capsys.readouterr().err
    with pytest.raises(UnknownTrainerError, match="trainable trackers"):
        trainer_class("kcf")


def test_train_help_lists_every_trainer_with_its_defaults(capsys):
    assert vtrack_main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--data", "--pairs-per-epoch", "--cache-dir", "--region-prob", "--cycles-per-epoch", "--roi-method",
                 "--samples-per-epoch", "--clip-frames", "--backbone-weights", "--no-progress"):
        assert flag in text, flag
    assert "NAME: fdn, rar, siamfc" in text
    assert "(default: fdn 100; rar 150; siamfc 150)" in text  # --max-val-frames
    assert "[rar, siamfc only]" in text and "refused" in text  # --batch-size
    assert vtrack_main(["train", "fdn", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--cycles-per-epoch" in text and "--pairs-per-epoch" not in text and "(default: 100)" in text


def test_export_keeps_the_chosen_keys_and_fp32_ones(tmp_path):
    state = {"conv.weight": torch.randn(2, 3), "bn.running_mean": torch.randn(2),
             "bn.num_batches_tracked": torch.tensor(7), "head.scale": torch.tensor([0.001]),
             "branch.weight": torch.randn(2), "index": torch.arange(3)}
    torch.save(state, tmp_path / "best.pt")
    out = export_weights(tmp_path / "best.pt", tmp_path / "w.pt", half=True, keep=lambda k: not k.startswith("branch."),
                         keep_fp32=lambda k: k.startswith("head."))
    saved = torch.load(out, weights_only=True)
    assert list(saved) == ["conv.weight", "bn.running_mean", "head.scale", "index"]
    assert saved["conv.weight"].dtype == saved["bn.running_mean"].dtype == torch.float16
    assert torch.equal(saved["head.scale"], state["head.scale"]) and torch.equal(saved["index"], state["index"])
    plain = torch.load(export_weights(tmp_path / "best.pt", tmp_path / "p.pt"), weights_only=True)
    assert set(plain) == set(state) - {"bn.num_batches_tracked"} and all(torch.equal(plain[k], state[k]) for k in plain)
    assert not (tmp_path / "w.pt.tmp").exists()


def test_a_fifth_tracker_trains_through_the_registry_and_cli(train_dataset_dir, tmp_path):
    """test/toy_trainer.py: a one-conv heat-map net on real frames, registered by name and
    trained by `vtrack train toy` (1 epoch of 2 iterations, resumed to 2, validated by its
    tracker): weights, provenance and history come out as for every tracker."""
    out = tmp_path / "toy"
    options = ["--data", str(train_dataset_dir), "--out", str(out), "--train-sequences", "vot_car1", "uav_boat1",
               "--val-sequences", "uav_wakeboard7", "--max-shift", "0.2", "--threads", "1", "--no-progress"]
    provenance = train_resume_and_refuse("toy", out, options, iterations=2, trainers=TOY)
    assert [s["name"] for s in provenance["train_sequences"]] == ["vot_car1", "uav_boat1"]
    assert all(s["usable_frames"] > 0 for s in provenance["train_sequences"])
    assert provenance["crops_per_epoch"] == 8 and provenance["iterations_per_epoch"] == 2  # the toy's defaults
    assert provenance["data"]["max_shift"] == 0.2 and provenance["max_val_frames"] == 5
    assert provenance["lr"]["start"] == 1e-2 and None not in provenance["val_auc_per_epoch"]
    history = json.loads((out / "history.json").read_text())
    assert history["monitor"] == "auc" and [e["iterations"] for e in history["epochs"]] == [2, 2]
    weights = torch.load(out / "toy.pt", weights_only=True)
    assert set(weights) == {"conv.weight", "conv.bias"} and weights["conv.weight"].dtype == torch.float16
    # The registry, options and help know it like the others.
    shown = run_vtrack("train", "--help", trainers=TOY)
    assert shown.returncode == 0 and "--crops-per-epoch" in shown.stdout and "fdn, rar, siamfc, toy" in shown.stdout
    refused = run_vtrack("train", "toy", *options, "--epochs", "1", "--cycles-per-epoch", "2", trainers=TOY)
    assert refused.returncode == 2 and "--cycles-per-epoch (an option of fdn) does not apply to toy" in refused.stderr
    assert "toy" not in TRAINABLE  # registered in the command's process only
