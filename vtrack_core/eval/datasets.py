"""Benchmark sequences on disk: OTB and GOT-10k layouts, read into one `Sequence` type.

OTB layout (also used by UAV123/DTB70 conversions):
    ROOT/<Seq>/img/0001.jpg ...
    ROOT/<Seq>/groundtruth_rect.txt          one `x,y,w,h` per frame (comma, tab or space)
    ROOT/<Seq>/groundtruth_rect.1.txt, .2.txt several targets -> sequences `Seq.1`, `Seq.2`

GOT-10k layout:
    ROOT/list.txt                            sequence names, one a line
    ROOT/<seq>/00000001.jpg ...
    ROOT/<seq>/groundtruth.txt               `x,y,w,h` per frame
    ROOT/<seq>/absence.label                 optional; 1 where the target is absent

Frames where the target is absent have a NaN row in `ground_truth`, so metrics and the
runner can tell them apart from real boxes without a second array.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_OTB_GT = re.compile(r"^groundtruth_rect(?:\.(\d+))?\.txt$")
_SEPARATORS = re.compile(r"[,\s;]+")


class DatasetError(ValueError):
    """A folder or file that cannot be read as a tracking sequence; the message says why."""


@dataclass(eq=False)
class Sequence:
    """One target in one video: frame paths and an N x 4 (x, y, w, h) ground truth."""

    name: str
    frames: list[Path]
    ground_truth: np.ndarray  # N x 4 float64, NaN rows where the target is absent
    root: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.frames = [Path(p) for p in self.frames]
        self.ground_truth = np.asarray(self.ground_truth, dtype=np.float64).reshape(-1, 4)
        if len(self.frames) != len(self.ground_truth):
            raise DatasetError(
                f"{self.name}: {len(self.frames)} frames but {len(self.ground_truth)} ground-truth rows"
            )

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, index: int) -> np.ndarray:
        """Frame `index` as HxWx3 uint8 BGR; an error rather than None for an unreadable file."""
        import cv2

        path = self.frames[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{self.name}: cannot read frame {index} ({path})")
        return image

    def valid_mask(self) -> np.ndarray:
        """Frames whose ground truth is a usable box (finite, positive size)."""
        gt = self.ground_truth
        return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)

    def first_valid_index(self) -> int | None:
        """The frame a tracker is started on: the first with a usable ground truth."""
        valid = np.flatnonzero(self.valid_mask())
        return int(valid[0]) if len(valid) else None

    def head(self, max_frames: int | None) -> "Sequence":
        """The first `max_frames` frames (all of them for None), for quick runs."""
        if max_frames is None or max_frames >= len(self):
            return self
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        return Sequence(self.name, self.frames[:max_frames], self.ground_truth[:max_frames], self.root)


# --- parsing ------------------------------------------------------------------------------
def read_boxes(path: str | Path) -> np.ndarray:
    """N x 4 float64 from a text file of `x,y,w,h` rows; separators comma, tab, space.

    'NaN' (any case) is kept as NaN. Blank lines are ignored; any other row that is not four
    numbers is an error naming the line, since silently dropping it would shift every later
    frame against its image.
    """
    path = Path(path)
    rows: list[list[float]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        parts = [p for p in _SEPARATORS.split(text) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise DatasetError(f"{path}:{number}: not numbers: {line!r}") from None
        if len(values) != 4:
            raise DatasetError(f"{path}:{number}: expected 4 values x,y,w,h, got {len(values)}: {line!r}")
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _natural_key(path: Path) -> tuple:
    """'2.jpg' before '10.jpg' even where frame numbers are not zero-padded."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder in frame order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def _fit_lengths(name: str, frames: list[Path], gt: np.ndarray) -> tuple[list[Path], np.ndarray]:
    n = min(len(frames), len(gt))
    if len(frames) != len(gt):
        log.warning(
            "%s: %d frames but %d ground-truth rows; using the first %d", name, len(frames), len(gt), n
        )
    return frames[:n], gt[:n]


# --- OTB ----------------------------------------------------------------------------------
def otb_ground_truth_files(seq_dir: str | Path) -> list[tuple[str | None, Path]]:
    """(target suffix or None, file) for each groundtruth_rect[.K].txt, in target order."""
    found = []
    for p in Path(seq_dir).iterdir():
        match = _OTB_GT.match(p.name)
        if match and p.is_file():
            found.append((match.group(1), p))
    return sorted(found, key=lambda item: -1 if item[0] is None else int(item[0]))


def is_otb_sequence(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "img").is_dir() and bool(otb_ground_truth_files(path))


def read_otb_sequence(seq_dir: str | Path) -> list[Sequence]:
    """All targets of one OTB sequence folder (one Sequence per ground-truth file)."""
    seq_dir = Path(seq_dir)
    if not (seq_dir / "img").is_dir():
        raise DatasetError(f"{seq_dir}: no img/ folder (OTB layout is <Seq>/img/0001.jpg)")
    gt_files = otb_ground_truth_files(seq_dir)
    if not gt_files:
        raise DatasetError(f"{seq_dir}: no groundtruth_rect.txt")
    frames = list_images(seq_dir / "img")
    if not frames:
        raise DatasetError(f"{seq_dir / 'img'}: no .jpg or .png frames")
    sequences = []
    for target, gt_file in gt_files:
        name = seq_dir.name if target is None else f"{seq_dir.name}.{target}"
        seq_frames, gt = _fit_lengths(name, frames, read_boxes(gt_file))
        sequences.append(Sequence(name, seq_frames, gt, seq_dir))
    return sequences


def read_otb(root: str | Path) -> list[Sequence]:
    """Every sequence folder under `root`, sorted by name."""
    root = Path(root)
    sequences: list[Sequence] = []
    for seq_dir in sorted(p for p in root.iterdir() if is_otb_sequence(p)):
        sequences.extend(read_otb_sequence(seq_dir))
    if not sequences:
        raise DatasetError(f"{root}: no OTB sequence folders (<Seq>/img/ with <Seq>/groundtruth_rect.txt)")
    return sequences


# --- GOT-10k ------------------------------------------------------------------------------
def is_got10k_sequence(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "groundtruth.txt").is_file()


def read_got10k_sequence(seq_dir: str | Path) -> Sequence:
    """One GOT-10k sequence; frames marked absent in absence.label get a NaN row."""
    seq_dir = Path(seq_dir)
    gt_file = seq_dir / "groundtruth.txt"
    if not gt_file.is_file():
        raise DatasetError(f"{seq_dir}: no groundtruth.txt (GOT-10k layout)")
    frames = list_images(seq_dir)
    if not frames:
        raise DatasetError(f"{seq_dir}: no .jpg or .png frames")
    gt = read_boxes(gt_file)
    absence_file = seq_dir / "absence.label"
    if absence_file.is_file():
        flags = [line.strip() for line in absence_file.read_text().splitlines() if line.strip()]
        try:
            absent = np.asarray([int(float(f)) for f in flags], dtype=np.int64)
        except ValueError:
            raise DatasetError(f"{absence_file}: expected one 0 or 1 a line") from None
        if len(absent) != len(gt):
            log.warning("%s: %d absence labels for %d ground-truth rows", seq_dir.name, len(absent), len(gt))
        n = min(len(absent), len(gt))
        gt[:n][absent[:n] == 1] = np.nan
    frames, gt = _fit_lengths(seq_dir.name, frames, gt)
    return Sequence(seq_dir.name, frames, gt, seq_dir)


def read_got10k(root: str | Path) -> list[Sequence]:
    """Sequences named in list.txt (or, without one, every folder with a groundtruth.txt)."""
    root = Path(root)
    list_file = root / "list.txt"
    if list_file.is_file():
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        missing = [n for n in names if not (root / n).is_dir()]
        if missing:
            raise DatasetError(f"{list_file} names folders that do not exist: {', '.join(missing[:5])}")
    else:
        names = sorted(p.name for p in root.iterdir() if is_got10k_sequence(p))
    if not names:
        raise DatasetError(f"{root}: no GOT-10k sequences")
    return [read_got10k_sequence(root / n) for n in names]


# --- either -------------------------------------------------------------------------------
def detect_layout(root: str | Path) -> str:
    """'otb' or 'got10k' for a dataset folder (or a single sequence folder of either kind)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if (root / "list.txt").is_file() or is_got10k_sequence(root):
        return "got10k"
    if is_otb_sequence(root):
        return "otb"
    children = [p for p in root.iterdir() if p.is_dir()]
    if any(is_otb_sequence(p) for p in children):
        return "otb"
    if any(is_got10k_sequence(p) for p in children):
        return "got10k"
    raise DatasetError(
        f"{root} is neither an OTB dataset (<Seq>/img/*.jpg with <Seq>/groundtruth_rect.txt) "
        "nor a GOT-10k one (list.txt, <seq>/00000001.jpg with <seq>/groundtruth.txt)"
    )


def _target_folder(name: str) -> str | None:
    """'Jogging' for the OTB target name 'Jogging.2'; None for a name without a target suffix."""
    base, _, suffix = name.rpartition(".")
    return base if base and suffix.isdigit() else None


def load_dataset(root: str | Path, names: Iterable[str] | None = None) -> list[Sequence]:
    """Sequences of an OTB or GOT-10k folder, optionally only `names`, in the order given.

    A name selects a sequence by its full name (`Jogging.1`) or, for multi-target OTB
    folders, all targets of a folder (`Jogging`). A single sequence folder works too.
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout == "otb":
        sequences = read_otb_sequence(root) if is_otb_sequence(root) else read_otb(root)
    else:
        sequences = [read_got10k_sequence(root)] if is_got10k_sequence(root) else read_got10k(root)
    if names is None:
        return sequences
    selected: list[Sequence] = []
    unknown = []
    for wanted in names:
        matches = [s for s in sequences if s.name == wanted] or [
            s for s in sequences if _target_folder(s.name) == wanted
        ]
        if not matches:
            unknown.append(wanted)
        selected.extend(s for s in matches if all(s is not t for t in selected))
    if unknown:
        raise DatasetError(
            f"{root}: no sequence(s) {', '.join(unknown)}; available: {', '.join(s.name for s in sequences)}"
        )
    return selected
