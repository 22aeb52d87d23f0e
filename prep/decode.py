"""Stage 1 of prep: decode a source video upright, resample it by its timestamps, scale it down.

Frames are turned upright by the container's display matrix (phones store portrait video as
landscape frames plus a rotation), scaled down so the short side is `short_side` (smaller
videos keep their size; both sides are made even, as encoders need) and resampled to a constant
frame rate by their timestamps: for each output instant k / fps the source frame shown at that
instant is kept. Without `fps` the output rate is the container's average rate, so a constant
rate video keeps every frame and a variable rate one keeps its real timing instead of having
its frames squeezed onto an even grid. `source_index` maps every kept frame to its source
frame, so per-frame annotations (ground-truth boxes) follow exactly.

A file that ends early still gives the frames it holds, with a `warning` (prep stores it in the
sample's metadata); a file that cannot be used at all raises `InputError` with a cause a user
can act on: zero-length, not a video (what it looks like instead), a truncated or damaged video.

A folder of numbered images (MMAction2's rawframes, HAT's releases) decodes the same way, at
FOLDER_FPS (`decode_frames`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin


class InputError(Exception):
    """A source video that cannot be used; the message is the reason recorded in the manifest."""


@dataclass
class Decoded:
    frames: np.ndarray         # uint8 (T, H, W, 3) RGB, upright, resized and resampled
    fps: float                 # frame rate of `frames`
    source_fps: float
    source_frames: int         # frames decoded from the source
    source_index: np.ndarray   # int (T,): source frame index of each kept frame
    rotation: int = 0          # degrees (counterclockwise) the source frames were turned to stand upright
    warning: str = ""          # a partial decode: what is missing and what to do


# Container signatures (offset, bytes): a file that starts like a video but does not open is a
# damaged or truncated video; one that does not is not a video at all.
SIGNATURES = (("mp4/mov", 4, b"ftyp"), ("mp4/mov", 4, b"moov"), ("mp4/mov", 4, b"mdat"),
              ("Matroska/WebM", 0, b"\x1a\x45\xdf\xa3"), ("AVI", 8, b"AVI "), ("FLV", 0, b"FLV"),
              ("MPEG-PS", 0, b"\x00\x00\x01\xba"), ("Ogg", 0, b"OggS"), ("IVF", 0, b"DKIF"),
              ("ASF/WMV", 0, b"\x30\x26\xb2\x75"))
FETCH_AGAIN = "fetch it again"
# A decode shorter than the container's duration by more than this is partial: container
# durations are exact for most files but can be estimates, off by a frame or so.
PARTIAL_SLACK_FRAMES, PARTIAL_SLACK_FRACTION = 2, 0.02


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(H, W) with the short side scaled down to short_side (never up) and both sides even."""
    scale = min(1.0, short_side / min(height, width)) if short_side else 1.0
    even = lambda v: max(2, int(round(v * scale / 2)) * 2)
    return even(height), even(width)


def looks_like(head: bytes) -> str:
    """What the first bytes of a file say it is: a container name, or a description of the text."""
    for name, offset, magic in SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head[:188 * 2:188] == b"GG":  # MPEG-TS: a sync byte every 188 bytes
        return "MPEG-TS"
    text = head.lstrip()
    if text[:1] == b"<":
        return "html"
    if text and all(32 <= c < 127 or c in b"\t\r\n" for c in text[:512]):
        return "text"
    return ""


def unusable(path: Path, detail: str) -> InputError:
    """The error for a file FFmpeg cannot use, with the likely cause told by its first bytes."""
    with open(path, "rb") as f:
        head = f.read(512)
    kind = looks_like(head)
    if kind == "html":
        return InputError("not a video: the file is an HTML page (a failed download saves the error page): "
                          + FETCH_AGAIN)
    if kind == "text":
        return InputError(f"not a video: the file is text ({head[:40].decode('ascii', 'replace').strip()!r}...)")
    if not kind:
        return InputError(f"not a video: FFmpeg knows no container that starts with bytes {head[:8].hex(' ')}")
    return InputError(f"truncated or damaged {kind} file ({detail}): {FETCH_AGAIN}")


def rotation_of(frame: av.VideoFrame) -> int:
    """The counterclockwise turn, a multiple of 90 degrees, that makes a decoded frame upright."""
    try:
        degrees = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return int(round((degrees or 0) / 90)) % 4 * 90


def decode_source(path: str | Path, short_side: int | None = 128, fps: float | None = None,
                  max_seconds: float | None = None) -> Decoded:
    path = Path(path)
    if path.is_dir():
        return decode_frames(path, short_side, fps, max_seconds)
    if not path.is_file():
        raise InputError("missing file")
    if path.stat().st_size == 0:
        raise InputError(f"zero-length file (a download or copy that never finished): {FETCH_AGAIN}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise unusable(path, f"FFmpeg: {getattr(err, 'strerror', None) or err}") from None
    with container:
        if not container.streams.video:
            raise InputError("no video stream (an audio-only file?)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, times, errors, stopped = [], [], 0, False
        size = rotation = None
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError:  # a damaged packet: keep what decodes around it
                    errors += 1
                    continue
                for frame in decoded:
                    t = frame.time if frame.time is not None else len(frames) / float(stream.average_rate or 30)
                    if max_seconds is not None and t >= max_seconds:
                        stopped = True
                        break
                    if size is None:
                        rotation = rotation_of(frame)
                        upright = (frame.width, frame.height) if rotation % 180 else (frame.height, frame.width)
                        size = output_size(*upright, short_side)  # (H, W) once upright
                    coded = size[::-1] if rotation % 180 else size  # (H, W) before the turn
                    pixels = frame.reformat(width=coded[1], height=coded[0], format="rgb24",
                                            interpolation="AREA").to_ndarray()
                    frames.append(np.rot90(pixels, rotation // 90) if rotation else pixels)
                    times.append(t)
                if stopped:
                    break
        except (av.FFmpegError, OSError, EOFError):  # the file ends inside a packet
            errors += 1
        if not frames:
            raise unusable(path, "no frame decodes")
        src_fps = source_rate(stream, times)
        announced = announced_seconds(stream, container)
        tick = float(stream.time_base) if stream.time_base else 1e-6
    times = np.asarray(times, np.float64)
    order = np.argsort(times, kind="stable")  # presentation order, should a file disagree
    frames, times = [frames[i] for i in order], times[order] - times[order[0]]
    out_fps = fps or src_fps
    index = resample_index(times, src_fps, out_fps, tick / 2 + 1e-6)
    span, warning = times[-1] + 1 / src_fps, ""
    if stopped:
        pass  # cut at max_seconds on purpose
    elif announced and span < announced - partial_slack(announced, src_fps):
        warning = f"partial decode: {len(frames)} frames ({span:.1f} s) of the {announced:.1f} s the container announces"
    elif errors:
        warning = f"partial decode: {errors} packet(s) did not decode ({len(frames)} frames did)"
    if warning:
        warning += f"; the file is truncated or damaged: {FETCH_AGAIN}"
    return Decoded(np.stack([frames[i] for i in index]), float(out_fps), src_fps, len(frames), order[index],
                   rotation or 0, warning)


def source_rate(stream, times: list[float]) -> float:
    """The container's average frame rate, else one measured from the timestamps."""
    if stream.average_rate:
        return float(stream.average_rate)
    if len(times) > 1 and times[-1] > times[0]:
        return (len(times) - 1) / (times[-1] - times[0])
    return float(stream.guessed_rate or 30)


def announced_seconds(stream, container) -> float:
    """How long the container says the video is (the video stream's duration, else the file's); 0 if unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration and container.duration > 0 else 0.0


def partial_slack(announced: float, fps: float) -> float:
    return max(PARTIAL_SLACK_FRAMES / fps, PARTIAL_SLACK_FRACTION * announced)


def resample_index(times: np.ndarray, src_fps: float, fps: float, tolerance: float) -> np.ndarray:
    """For each output instant k / fps, the source frame shown then: the last one whose timestamp
    is <= the instant. Timestamps are rounded to the stream's time base, so a frame that starts
    within `tolerance` (half a time base tick) after an instant counts as shown: a constant rate
    video resampled at its own rate keeps every frame exactly once, whatever the rounding."""
    duration = times[-1] + 1 / src_fps  # the last frame shows for one average frame period
    count = max(1, math.ceil((duration - tolerance) * fps - 1e-9))
    instants = np.arange(count) / fps
    return np.clip(np.searchsorted(times, instants + tolerance, side="right") - 1, 0, len(times) - 1)


# ---------------------------------------------------------------------------------------------
# frame folders (MMAction2 rawframes, HAT's releases): 000001.jpg, 000002.jpg, ...

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_FRAME_OPENERS = {".jpg": JpegImagePlugin.JpegImageFile, ".jpeg": JpegImagePlugin.JpegImageFile,
                  ".png": PngImagePlugin.PngImageFile}


def open_frame(path: Path) -> Image.Image:
    """A frame (or mask) image opened by its suffix's own decoder. Not `Image.open`: ultralytics,
    imported by the detector, patches it to pip-install a HEIF plugin whenever a file does not
    identify, which a JPEG cut short by a failed download does."""
    return _FRAME_OPENERS[path.suffix.lower()](path)
# Frame folders carry no timestamps. The tools that write them (MMAction2's extractors, HAT)
# keep every frame of the source, and Kinetics and UCF-101 videos run at 25-30 fps: 30 is the
# rate taken, and --fps resamples from it.
FOLDER_FPS = 30.0


def frame_files(folder: Path) -> list[Path]:
    """The numbered images of a frame folder, by number (000009.jpg before 000010.jpg)."""
    found = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.stem.isdigit()]
    return sorted(found, key=lambda p: int(p.stem))


def decode_frames(folder: Path, short_side: int | None = 128, fps: float | None = None,
                  max_seconds: float | None = None) -> Decoded:
    """A frame folder as `decode_source` gives a video: source frame i is the i-th image by number.
    An image that does not decode shows the frame before it (a warning says which), so the frames
    keep their numbers and per-frame annotations (HAT's masks) stay aligned."""
    files = frame_files(folder)
    if max_seconds is not None:
        files = files[:max(1, math.ceil(max_seconds * FOLDER_FPS))]
    if not files:
        raise InputError(f"no frames: the folder holds no numbered {'/'.join(FRAME_SUFFIXES)} images")
    frames, damaged, size = [], [], None
    for path in files:
        try:
            with open_frame(path) as im:
                rgb = im.convert("RGB")
        except (OSError, SyntaxError, ValueError):
            damaged.append(path.name)
            if frames:
                frames.append(frames[-1])
            continue
        size = size or output_size(rgb.height, rgb.width, short_side)
        if rgb.size != size[::-1]:
            rgb = rgb.resize(size[::-1], Image.Resampling.BOX)  # an area average, as FFmpeg's AREA
        frames.append(np.asarray(rgb))
    if not frames:
        raise InputError(f"no frame decodes ({len(damaged)} damaged images): {FETCH_AGAIN}")
    frames = [frames[0]] * (len(files) - len(frames)) + frames  # damaged images before the first good one
    numbers = [int(p.stem) for p in files]
    gaps = sum(b - a - 1 for a, b in zip(numbers, numbers[1:]))
    warning = "; ".join(w for w in (f"{len(damaged)} damaged image(s) ({', '.join(damaged[:3])})" if damaged else "",
                                    f"{gaps} frame number(s) absent between {numbers[0]} and {numbers[-1]}"
                                    if gaps else "") if w)
    if warning:
        warning = f"partial decode: {warning}; the folder is incomplete: {FETCH_AGAIN}"
    times = np.arange(len(frames)) / FOLDER_FPS
    out_fps = fps or FOLDER_FPS
    index = resample_index(times, FOLDER_FPS, out_fps, 1e-6)
    return Decoded(np.stack([frames[i] for i in index]), float(out_fps), FOLDER_FPS, len(frames), index, 0, warning)
