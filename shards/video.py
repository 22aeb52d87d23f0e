"""Encode and decode the video member of a sample with PyAV (FFmpeg), and cut clips out of it.

The member is an IVF stream: a 32-byte file header, then per frame a 12-byte frame header
(payload size, pts = the frame number) and the coded frame, in presentation order (no frame
reordering: H.264 is coded without B-frames). Every `gop` frames the encoder starts a keyframe,
and each keyframe with the frames up to the next one is a *segment* that decodes on its own. The
sample's metadata lists the segments as [first frame, byte offset] pairs, so a loader reads only
the segments a clip spans and hands the decoder a stream of those alone (`segment_range`,
`clip_stream`): a clip costs at most gop - 1 unused frames to decode wherever it starts in the
video, where a container file decodes everything before the clip (DALI's decoder does not seek
in memory streams; benchmarks/README.md measures both).

Deterministic: the same frames and settings give the same bytes (bit-exact encoders, one
encoder thread, a container written here), which makes shards reproducible byte for byte.
"""
from __future__ import annotations

import bisect
import io
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .format import CODECS, ShardFormatError

GOP = 16  # frames per segment: see benchmarks/README.md ("Segments") for the size/speed trade-off
IVF_HEADER = 32
IVF_FRAME_HEADER = 12
_IVF_FRAME = struct.Struct("<IQ")  # payload size, pts

# Encoder settings per codec. VP9: constant quality, good speed/size trade-off for 128-px video.
ENCODER_OPTIONS = {
    "vp9": {"crf": "32", "b:v": "0", "deadline": "good", "cpu-used": "5", "row-mt": "0"},
    # cpu-independent: x264's AVX-512 code gave different bytes from run to run for the same frames
    # (3 to 6 digests in 8 encodes of one video on an AVX-512 Xeon); this keeps the output reproducible
    "h264": {"crf": "23", "preset": "fast", "x264-params": "cpu-independent=1"},
    "mjpeg": {"q:v": "3"},
}
# The shard member also needs, from x264: no B-frames (frames stay in presentation order, so a
# segment is a plain run of frames) and SPS/PPS at every keyframe (a segment decodes on its own).
SEGMENT_X264 = ":bframes=0:repeat-headers=1"


def encoder_options(codec: str, segmented: bool) -> dict:
    options = dict(ENCODER_OPTIONS[codec])
    if codec == "h264" and segmented:
        options["x264-params"] += SEGMENT_X264
    return options


@dataclass(frozen=True)
class EncodedVideo:
    """A video member: the IVF bytes and its segment table."""

    data: bytes
    segments: tuple[tuple[int, int], ...]  # (first frame, byte offset in data) per segment
    frames: int


def check_rgb_frames(frames, what: str = "frames") -> None:
    """ValueError unless `frames` is what every stage passes on: a uint8 array (T, H, W, 3) of RGB."""
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
            and frames.shape[-1] == 3):
        raise ValueError(f"{what} must be a uint8 array (T, H, W, 3) of RGB frames, got "
                         f"{getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}")


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    check_rgb_frames(frames)
    if len(frames) == 0:
        raise ShardFormatError("no frames to encode")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ShardFormatError(f"frame size {frames.shape[1]}x{frames.shape[2]} is odd: encoders need even sizes")
    return frames


def encode_video(frames: np.ndarray, fps: float, codec: str = "vp9", gop: int = GOP) -> EncodedVideo:
    """uint8 frames (T, H, W, 3) RGB -> the IVF member with a keyframe every `gop` frames."""
    if codec not in CODECS:
        raise ShardFormatError(f"unknown codec {codec!r}; known: {sorted(CODECS)}")
    if gop < 1:
        raise ShardFormatError(f"gop must be >= 1, not {gop}")
    frames = _check_frames(frames)
    _, encoder, fourcc = CODECS[codec]
    rate = Fraction(fps).limit_denominator(1001)
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height = frames.shape[2], frames.shape[1]
    ctx.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    ctx.time_base, ctx.framerate = 1 / rate, rate
    ctx.gop_size = gop
    ctx.thread_count = 1  # one thread: deterministic output; prep parallelises over videos
    ctx.options = encoder_options(codec, segmented=True)
    ctx.flags |= av.codec.context.Flags.bitexact
    packets = []
    for i, frame in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = i
        packets += ctx.encode(vf)
    packets += ctx.encode(None)
    if [p.pts for p in packets] != list(range(len(frames))) or not packets[0].is_keyframe:
        raise ShardFormatError(f"{encoder} did not give one packet per frame in order, starting with a keyframe")
    out = [b"DKIF", struct.pack("<HH4sHHIII", 0, IVF_HEADER, fourcc, ctx.width, ctx.height,
                                rate.numerator, rate.denominator, len(packets)), bytes(4)]
    segments, offset = [], IVF_HEADER
    for p in packets:
        if p.is_keyframe:
            segments.append((int(p.pts), offset))
        payload = bytes(p)
        out += [_IVF_FRAME.pack(len(payload), p.pts), payload]
        offset += IVF_FRAME_HEADER + len(payload)
    return EncodedVideo(b"".join(out), tuple(segments), len(frames))


def encode_file(frames: np.ndarray, fps: float, codec: str = "h264") -> bytes:
    """uint8 frames (T, H, W, 3) RGB -> an ordinary video file as a camera or a download holds it:
    H.264 in .mp4, VP9 in .webm, MJPEG in .mkv (prep-synth's raw set, test inputs)."""
    containers = {"h264": "mp4", "vp9": "webm", "mjpeg": "matroska"}
    if codec not in containers:
        raise ShardFormatError(f"unknown codec {codec!r}; known: {sorted(containers)}")
    frames = _check_frames(frames)
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, "w", format=containers[codec], container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(CODECS[codec][1], rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.gop_size = 32
        stream.thread_count = 1
        stream.options = encoder_options(codec, segmented=False)
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return buf.getvalue()


def segment_range(segments, total_frames: int, member_size: int, first: int, last: int) -> tuple[int, int, int, int]:
    """The segments holding frames first..last: (byte start, byte end) within the member, the
    frame the range starts with, and the number of frames in it."""
    starts = [int(f) for f, _ in segments]
    a = bisect.bisect_right(starts, int(first)) - 1
    b = bisect.bisect_right(starts, int(last))  # the segment after the one holding `last`
    if a < 0 or not 0 <= first <= last < total_frames:
        raise ShardFormatError(f"frames {first}..{last} are outside the video's {total_frames} frames")
    end, end_frame = (int(segments[b][1]), starts[b]) if b < len(starts) else (member_size, total_frames)
    return int(segments[a][1]), end, starts[a], end_frame - starts[a]


def clip_stream(header: bytes, body: bytes, frames: int) -> bytes:
    """An IVF stream of `body` (whole segments cut from a member) under the member's header."""
    if len(header) != IVF_HEADER or header[:4] != b"DKIF":
        raise ShardFormatError("the video member is not an IVF stream: re-run prep-shards")
    return header[:24] + struct.pack("<I", frames) + header[28:] + body


def ivf_frames(data: bytes, start: int = IVF_HEADER) -> list[tuple[int, int, int]]:
    """(byte offset, payload size, pts) of every frame record of an IVF stream, or from `start`
    on of records only (start=0: a cut of whole segments without the file header)."""
    if start and (len(data) < IVF_HEADER or data[:4] != b"DKIF"):
        raise ShardFormatError("the video member is not an IVF stream")
    records, offset = [], start
    while offset < len(data):
        if offset + IVF_FRAME_HEADER > len(data):
            raise ShardFormatError(f"IVF stream cut inside a frame header at byte {offset}")
        size, pts = _IVF_FRAME.unpack_from(data, offset)
        if offset + IVF_FRAME_HEADER + size > len(data):
            raise ShardFormatError(f"IVF stream cut inside frame {len(records)} at byte {offset}")
        records.append((offset, size, pts))
        offset += IVF_FRAME_HEADER + size
    return records


def decode_video(data: bytes) -> np.ndarray:
    """Encoded file bytes -> uint8 frames (T, H, W, 3) RGB, every frame in presentation order.

    4:2:0 video is converted to RGB the way DALI's decoder does it (see yuv420_to_rgb), so the
    reference loader and the DALI loader see the same pixels; other pixel formats go through
    FFmpeg's converter.
    """
    return decode_frames(data, None)


def decode_frames(data: bytes, indices) -> np.ndarray:
    """The frames at `indices` (decoded-frame numbers, any order, repeats allowed; None = all),
    as uint8 (len(indices), H, W, 3). Decoding stops after the last frame needed."""
    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if indices is None else max(wanted)
    kept = {}
    try:
        with av.open(io.BytesIO(data)) as container:
            for n, frame in enumerate(container.decode(video=0)):
                if wanted is None or n in wanted:
                    kept[n] = frame
                if last is not None and n >= last:
                    break
    except (av.FFmpegError, IndexError) as err:  # IndexError: no video stream
        raise ShardFormatError(f"video does not decode: {err}") from None
    if not kept:
        raise ShardFormatError("video decodes to zero frames")
    order = sorted(kept) if indices is None else [int(i) for i in indices]
    missing = [i for i in order if i not in kept]
    if missing:
        raise ShardFormatError(f"video has {len(kept)} decodable frames, frame {missing[0]} was asked for")
    frames = [kept[i] for i in order]
    fmt = frames[0].format.name
    if fmt in ("yuv420p", "yuvj420p") and all(f.format.name == fmt for f in frames):
        planes = np.stack([f.to_ndarray(format=fmt) for f in frames])
        return yuv420_to_rgb(planes, full_range=fmt == "yuvj420p")
    return np.stack([f.to_ndarray(format="rgb24") for f in frames])


def yuv420_to_rgb(planes: np.ndarray, full_range: bool) -> np.ndarray:
    """(T, 3H/2, W) uint8 I420 planes -> (T, H, W, 3) uint8 RGB, BT.601.

    Chroma is upsampled bilinearly with centre siting and edge clamping, then rounded: this
    matches DALI's CPU video decoder to within one level on under 0.1% of values (VP9) and
    exactly for MJPEG (measured), where FFmpeg's default converter differs by up to ~65 levels
    on sharp colour edges.
    """
    t, rows, width = planes.shape
    height = rows * 2 // 3
    y = planes[:, :height].astype(np.float32)
    chroma = planes[:, height:].reshape(t, 2, height // 2, width // 2)
    u, v = (_upsample2(chroma[:, i].astype(np.float32)) - 128.0 for i in (0, 1))
    if not full_range:  # limited ("TV") range: Y in [16, 235], chroma in [16, 240]
        y = (y - 16.0) * (255.0 / 219.0)
        u, v = u * (255.0 / 224.0), v * (255.0 / 224.0)
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _upsample2(c: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling of (T, h, w) along the last two axes (align_corners=False)."""
    for axis in (1, 2):
        n = c.shape[axis]
        prev = np.take(c, np.r_[0, 0:n - 1], axis=axis)
        nxt = np.take(c, np.r_[1:n, n - 1], axis=axis)
        even, odd = 0.75 * c + 0.25 * prev, 0.75 * c + 0.25 * nxt
        c = np.stack([even, odd], axis=axis + 1)
        c = c.reshape(*c.shape[:axis], 2 * n, *c.shape[axis + 2:])
    return c
