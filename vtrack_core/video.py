"""Frame sources (video files, image folders) and writers for tracking overlays and boxes.

`open_source` hides whether frames come from a video or from an OTB / GOT-10k sequence
folder, so `vtrack track` and tools treat both alike:

    with open_source("walk.mp4") as source:
        for index, frame in source:      # frame: HxWx3 uint8 BGR
            ...
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Iterator

import cv2
import numpy as np

from .boxes import Box
from .tracker import TrackState

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


class FrameSourceError(ValueError):
    """Input that cannot be read as frames; the message names the path and the reason."""


class FrameSource:
    """Frames with their index; `ground_truth` is set for annotated sequence folders."""

    path: Path
    fps: float = 30.0
    ground_truth: np.ndarray | None = None  # N x 4, NaN rows where the target is absent

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def __len__(self) -> int:
        """Number of frames, or 0 where the container does not say."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoSource(FrameSource):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FrameSourceError(f"{self.path}: no such video file")
        self.capture = cv2.VideoCapture(str(self.path))
        ok, first = self.capture.read() if self.capture.isOpened() else (False, None)
        if not ok or first is None:
            self.capture.release()
            raise FrameSourceError(f"{self.path}: OpenCV cannot decode this file as a video")
        self._first: np.ndarray | None = first
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 30.0
        self.ground_truth = None

    def __len__(self) -> int:
        return max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._first is None:
            raise FrameSourceError(f"{self.path}: a video can be iterated only once")
        frame, self._first = self._first, None  # read in __init__ to fail early on bad files
        index = 0
        while frame is not None:
            yield index, _as_bgr(frame)
            index += 1
            ok, frame = self.capture.read()
            if not ok:
                break

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(FrameSource):
    def __init__(self, path: str | Path, frames: list[Path], ground_truth: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.frames = frames
        self.ground_truth = ground_truth
        self.fps = 30.0

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame_path in enumerate(self.frames):
            image = cv2.imread(str(frame_path), cv2.IMREAD_COLOR)
            if image is None:
                raise FrameSourceError(f"{frame_path}: cannot read this image")
            yield index, image


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """Some containers decode to grey or BGRA; trackers need 3-channel BGR."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def open_source(path: str | Path) -> FrameSource:
    """A video file, an OTB / GOT-10k sequence folder, or a folder of images (e.g. `img/`).

    For annotated folders `ground_truth` holds the (first target's) boxes, so the caller can
    start from the first valid one; for an `img/` folder the parent's annotation is used.
    """
    from .eval.datasets import (
        DatasetError,
        is_got10k_sequence,
        is_otb_sequence,
        list_images,
        read_got10k_sequence,
        read_otb_sequence,
    )

    path = Path(path)
    if not path.exists():
        raise FrameSourceError(f"{path}: no such file or folder")
    if path.is_file():
        return VideoSource(path)
    try:
        if is_otb_sequence(path):
            seq = read_otb_sequence(path)[0]
            return ImageFolderSource(path, seq.frames, seq.ground_truth)
        if path.name == "img" and is_otb_sequence(path.parent):
            seq = read_otb_sequence(path.parent)[0]
            return ImageFolderSource(path, seq.frames, seq.ground_truth)
        if is_got10k_sequence(path):
            seq = read_got10k_sequence(path)
            return ImageFolderSource(path, seq.frames, seq.ground_truth)
    except DatasetError as error:
        raise FrameSourceError(str(error)) from None
    folder = path / "img" if (path / "img").is_dir() else path
    frames = list_images(folder)
    if not frames:
        raise FrameSourceError(f"{path}: no .jpg / .png frames here (nor in an img/ folder inside)")
    return ImageFolderSource(path, frames)


# --- drawing ------------------------------------------------------------------------------
STATE_COLORS = {  # BGR
    TrackState.INITIALIZING: (255, 160, 0),
    TrackState.TRACKING: (0, 200, 0),
    TrackState.UNCERTAIN: (0, 200, 255),
    TrackState.LOST: (0, 0, 255),
}


def draw_track(
    image: np.ndarray,
    box: Box | None,
    confidence: float | None = None,
    state: TrackState | int | None = None,
    label: str = "",
) -> np.ndarray:
    """Draw the box (coloured by state) and a caption on `image` in place; returns it.

    A missing or non-finite box draws only the caption, so frames without a result still
    show which tracker ran and that it gave nothing.
    """
    state = TrackState(state) if state is not None else None
    color = STATE_COLORS.get(state, (200, 200, 200)) if state is not None else (200, 200, 200)
    height, width = image.shape[:2]
    caption = " ".join(
        part
        for part in (
            label,
            state.name.lower() if state is not None else "",
            f"{confidence:.2f}" if confidence is not None and math.isfinite(confidence) else "",
        )
        if part
    )
    thickness = max(1, round(min(height, width) / 240))
    scale = max(0.4, min(height, width) / 600)
    if box is not None and box.is_finite():
        x1, y1, x2, y2 = (int(round(v)) for v in box.xyxy())
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        anchor = (max(0, x1), y1 - 4 if y1 - 4 > 12 * scale else min(height - 4, y2 + int(14 * scale)))
    else:
        caption = (caption + " no box").strip()
        anchor = (4, int(16 * scale) + 4)
    if caption:
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x, y = anchor
        cv2.rectangle(image, (x, y - th - base), (x + tw, y + base // 2), (0, 0, 0), -1)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(image, caption, (x, y - base // 2), font, scale, color, 1, cv2.LINE_AA)
    return image


# --- writers ------------------------------------------------------------------------------
class OverlayWriter:
    """Video file of annotated frames; the size is taken from the first frame written."""

    def __init__(self, path: str | Path, fps: float = 30.0, fourcc: str = "mp4v") -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.fourcc = fourcc
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (width, height)
            fourcc = cv2.VideoWriter_fourcc(*self.fourcc)
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise FrameSourceError(f"{self.path}: OpenCV cannot write a {self.fourcc} video here")
        if (width, height) != self.size:
            frame = cv2.resize(frame, self.size)  # a video has one size; sequences rarely change it
        self.writer.write(_as_bgr(frame))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def __enter__(self) -> "OverlayWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BoxesWriter:
    """Text file with one `x,y,w,h,confidence,state` line per frame (state as its number).

    Frames without a result get `nan` fields and state -1, so line i is always frame i.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("w")
        self.lines = 0

    def write(
        self, box: Box | None, confidence: float | None = None, state: TrackState | int | None = None
    ) -> None:
        values = box.xywh() if box is not None else (math.nan,) * 4
        fields = ["nan" if not math.isfinite(v) else f"{v:.2f}" for v in values]
        fields.append("nan" if confidence is None or not math.isfinite(confidence) else f"{confidence:.4f}")
        fields.append(str(int(state)) if state is not None else "-1")
        self._file.write(",".join(fields) + "\n")
        self.lines += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "BoxesWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
