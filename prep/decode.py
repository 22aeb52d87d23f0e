"""Stage 1 of prep: decode a source video, resample it in time and size.

Frames are scaled down so the short side is `short_side` (smaller videos keep their size; both
sides are made even, as encoders need) and, with `fps`, resampled to a constant frame rate by keeping for
each output instant the source frame shown at that instant. `source_index` maps every kept
frame to its source frame, so per-frame annotations (ground-truth boxes) follow exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


class InputError(Exception):
    """A source video that cannot be used; the message is the reason recorded in the manifest."""


@dataclass
class Decoded:
    frames: np.ndarray         # uint8 (T, H, W, 3) RGB, resized and resampled
    fps: float                 # frame rate of `frames`
    source_fps: float
    source_frames: int
    source_index: np.ndarray   # int (T,): source frame index of each kept frame


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(H, W) with the short side scaled down to short_side (never up) and both sides even."""
    scale = min(1.0, short_side / min(height, width)) if short_side else 1.0
    even = lambda v: max(2, int(round(v * scale / 2)) * 2)
    return even(height), even(width)


def decode_source(path: str | Path, short_side: int | None = 128, fps: float | None = None,
                  max_seconds: float | None = None) -> Decoded:
    path = Path(path)
    if not path.is_file():
        raise InputError("missing file")
    if path.stat().st_size == 0:
        raise InputError("zero-length file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            src_fps = float(stream.average_rate or stream.guessed_rate or 30)
            frames, times = [], []
            size = None
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else len(frames) / src_fps
                if max_seconds is not None and t >= max_seconds:
                    break
                if size is None:
                    size = output_size(frame.height, frame.width, short_side)
                frames.append(frame.reformat(width=size[1], height=size[0], format="rgb24",
                                             interpolation="AREA").to_ndarray())
                times.append(t)
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise InputError(f"unreadable video ({type(err).__name__}: {err})".replace("\n", " ")) from None
    if not frames:
        raise InputError("zero decodable frames")
    times = np.asarray(times, np.float64)
    times -= times[0]
    if fps is None:
        index = np.arange(len(frames))
        out_fps = src_fps
    else:
        duration = times[-1] + 1 / src_fps
        instants = np.arange(0, duration - 1e-9, 1 / fps)
        index = np.clip(np.searchsorted(times, instants + 1e-9, side="right") - 1, 0, len(frames) - 1)
        out_fps = fps
    return Decoded(np.stack([frames[i] for i in index]), float(out_fps), src_fps, len(frames), index)
