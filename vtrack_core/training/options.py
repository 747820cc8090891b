"""`vtrack train` options: declared once here (the ones every tracker has) or on a
`Trainer` subclass (`options`, its own), each filling one of the trainer's settings; their
defaults are the trainer's field defaults, never copied into the command line.

Cheap to import (no torch): the command line finds the tracker's name with it before it
imports that tracker's trainer.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from .entry import Trainer

USAGE = "vtrack train {name} --data DIR --epochs N --out DIR [options]"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


class Option:
    """One option: its flag, the trainer setting it fills ('data_config.region_prob': a field
    of the trainer's data config), its help ('{default}' becomes the trainer's default), an
    optional `convert` of the parsed value, and argparse's keywords (type, nargs, action...)."""

    def __init__(self, flag: str, setting: str, help: str, *, convert: Callable[[Any], Any] | None = None,
                 **argparse_kwargs: Any) -> None:
        self.flag = flag
        self.setting = setting
        self.help = help
        self.convert = convert
        self.argparse = argparse_kwargs

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str = "",
               probe: bool = False) -> None:
        """Add to `parser`; absent from the parsed namespace unless given (so the trainer's
        default applies). `probe`: no checks, only the shape (what takes a value)."""
        kwargs = dict(self.argparse)
        if kwargs.get("type") is positive:
            kwargs.setdefault("metavar", "N")
        elif kwargs.get("action") not in ("store_true", "store_false") and "choices" not in kwargs:
            kwargs.setdefault("metavar", self.flag.lstrip("-").replace("-", "_").upper())
        if probe:
            kwargs = {k: v for k, v in kwargs.items() if k in ("action", "nargs")}
        parser.add_argument(self.flag, dest=self.setting, default=argparse.SUPPRESS,
                            help=self.help.format(default=default), **kwargs)


# Every tracker's options, declared once.
SHARED_OPTIONS: tuple[Option, ...] = (
    Option("--data", "data_dir", "OTB- or GOT-10k-layout training folder (never the dev set)", required=True,
           metavar="DIR"),
    Option("--epochs", "epochs", "epochs to train (a resumed run: in all)", type=positive, required=True),
    Option("--out", "out_dir", "folder for weights, checkpoint, history and curves", required=True, metavar="DIR"),
    Option("--device", "device", "auto | cpu | cuda | cuda:N (default: {default})"),
    Option("--resume", "resume", "continue OUT/checkpoint.pt at its next epoch", action="store_true"),
    Option("--seed", "seed", "seed of the data's and the initialisation's random draws (default: {default})",
           type=int),
    Option("--val-sequences", "val_sequences",
           "sequences of --data held back for validation (default: {default}; the option with no names: "
           "no validation, the last epoch's weights are kept)", nargs="*", metavar="SEQ"),
    Option("--max-val-frames", "max_val_frames", "validate on the first N frames of each (default: {default})",
           type=positive),
    Option("--train-sequences", "train_sequences", "train on these only (default: all others)", nargs="+",
           metavar="SEQ"),
    Option("--threads", "threads", "torch / OpenCV threads (default: torch's)", type=positive),
    Option("--half", "half", "save the tracker's weights file in fp16", action="store_true"),
    Option("--lr", "lr", "learning rate annealed geometrically per epoch from START to END (default: {default})",
           nargs=2, type=float, metavar=("START", "END"), convert=tuple),
    Option("--no-progress", "progress", "no progress bars", action="store_true", convert=lambda given: not given),
)

# Shared by the trackers that draw their minibatches from a sample count (a trainer lists it
# in its `options` where it applies).
BATCH_SIZE = Option("--batch-size", "batch_size", "training samples (siamfc: pairs) per minibatch (default: {default})",
                    type=positive)
# Trainers whose network stands on a pretrained backbone (entry.PretrainedTrunk).
TRUNK_OPTIONS = (
    Option("--trunk-lr-scale", "trunk_lr_scale", "pretrained trunk: its stages after --freeze-up-to learn at this "
           "share of the learning rate; 0 keeps the whole trunk frozen (default {default})", type=float),
    Option("--freeze-up-to", "freeze_up_to", "pretrained trunk: the stages up to this tap stay frozen when the rest "
           "is fine-tuned (default {default})"),
)


# --- defaults in help texts -------------------------------------------------------------------
def format_default(value: Any) -> str:
    if value is None or value is dataclasses.MISSING:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return " ".join(format_default(v) for v in value) or "none"
    return str(value)


def default_text(trainer: type[Trainer], setting: str) -> str:
    """What `--help` says a setting's default is: its value, and the trainer's note on it
    (the note alone for a default of None, which only the note can explain)."""
    value = format_default(trainer.default(setting))
    note = trainer.default_notes.get(setting)
    if not note:
        return value
    return note if value == "none" else f"{value} ({note})"


# --- parsing ----------------------------------------------------------------------------------
def find_name(tokens: Sequence[str]) -> tuple[str | None, bool]:
    """(the tracker's name, whether --help was asked for) from `vtrack train`'s arguments:
    the first positional one, the shared options (wherever they stand) skipped with their values."""
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument("-h", "--help", action="store_true")
    probe.add_argument("name", nargs="?")
    for option in SHARED_OPTIONS:
        option.add_to(probe, probe=True)
    try:
        known, _ = probe.parse_known_args(list(tokens))
    except (argparse.ArgumentError, SystemExit):  # a malformed shared option: the full parser says what
        first = next((t for t in tokens if not t.startswith("-")), None)
        return first, "-h" in tokens or "--help" in tokens
    return known.name, known.help


def trainer_parser(trainer: type[Trainer]) -> argparse.ArgumentParser:
    """The full parser of `vtrack train NAME`: the shared options and the tracker's own."""
    parser = argparse.ArgumentParser(
        prog="vtrack train", usage=USAGE.format(name=trainer.name),
        description=f"{trainer.name}: {trainer.summary}" if trainer.summary else None,
        epilog="Options of other trackers are refused. `vtrack train --help` lists every trainable tracker.",
    )
    parser.add_argument("tracker", choices=[trainer.name], help=argparse.SUPPRESS)
    shared = parser.add_argument_group("options of every tracker")
    for option in SHARED_OPTIONS:
        option.add_to(shared, default_text(trainer, option.setting))
    own = parser.add_argument_group(f"{trainer.name} options")
    for option in trainer.options:
        option.add_to(own, default_text(trainer, option.setting))
    return parser


def settings_from(trainer: type[Trainer], namespace: argparse.Namespace) -> dict[str, Any]:
    """The trainer's keyword settings from a parsed command line: only the options given (the
    others keep the trainer's defaults); 'data_config.x' options fill a copy of the default
    data config."""
    given = vars(namespace)
    settings: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for option in (*SHARED_OPTIONS, *trainer.options):
        if option.setting not in given:
            continue
        value = given[option.setting]
        value = option.convert(value) if option.convert else value
        outer, _, inner = option.setting.partition(".")
        if inner:
            nested.setdefault(outer, {})[inner] = value
        else:
            settings[outer] = value
    for outer, values in nested.items():
        settings[outer] = dataclasses.replace(trainer.default(outer), **values)
    return settings


def overview(trainers: Mapping[str, type[Trainer] | Exception]) -> str:
    """`vtrack train --help`: the shared options (defaults per tracker where they differ),
    then each tracker's own. An option object that several trackers list is shown once,
    with the trackers it applies to."""
    names = sorted(trainers)
    loaded = {n: t for n, t in trainers.items() if not isinstance(t, Exception)}
    parser = argparse.ArgumentParser(
        prog="vtrack train", usage=USAGE.format(name="NAME"), add_help=False,
        description=f"Train a tracker's network; every epoch is validated by running the tracker on "
                    f"held-back sequences. NAME: {', '.join(names)}.",
        epilog="`vtrack train NAME --help` shows NAME's options alone, with its defaults. Options of "
               "another tracker are refused.",
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    users: dict[int, list[str]] = {}
    for name, trainer in loaded.items():
        for option in trainer.options:
            users.setdefault(id(option), []).append(name)
    shared = parser.add_argument_group("options of every tracker")
    common = list(SHARED_OPTIONS) + [o for n in names if n in loaded for o in loaded[n].options
                                     if len(users[id(o)]) > 1]
    for option in dict.fromkeys(common):
        having = users.get(id(option), sorted(loaded))
        defaults = {n: default_text(loaded[n], option.setting) for n in sorted(having)}
        text = next(iter(defaults.values())) if len(set(defaults.values())) == 1 else \
            "; ".join(f"{n} {v}" for n, v in defaults.items())
        if option not in SHARED_OPTIONS:
            option = Option(option.flag, option.setting, f"{option.help} [{', '.join(sorted(having))} only]",
                            convert=option.convert, **option.argparse)
        option.add_to(shared, text)
    text = parser.format_help()
    for name in names:  # one parser a tracker: two trackers may have an option of the same flag
        trainer = trainers[name]
        section = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
        if isinstance(trainer, Exception):
            section.add_argument_group(f"{name}: cannot be loaded ({type(trainer).__name__}: {trainer})")
            text += section.format_help()
            continue
        group = section.add_argument_group(f"{name} options" + (f" ({trainer.summary})" if trainer.summary else ""))
        for option in trainer.options:
            if len(users[id(option)]) == 1:
                option.add_to(group, default_text(trainer, option.setting))
        text += section.format_help()
    return text
