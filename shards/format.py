"""The shard format, version 2: member names, codecs, and the encoding of each member.

This module is the single source of truth for what a sample looks like inside a tar shard;
FORMAT.md beside it is the prose version. Writer, reader, checker and loaders import these
names instead of spelling them again.
"""
from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field

import msgpack
import numpy as np

FORMAT_NAME = "scene-debias-shards"
FORMAT_VERSION = 2  # 2: the video is an IVF stream cut into independently decodable segments
MANIFEST = "manifest.json"
NUM_SCENES = 365  # Places365 categories, in the index order of categories_places365.txt

# codec name -> (member extension, PyAV encoder, IVF fourcc). The video member is an IVF stream
# (shards/video.py), the thinnest container there is: a loader cuts the segments a clip needs out
# of it with two reads and a 32-byte header, whatever the clip's position in the video.
CODECS = {
    "vp9": ("vp9.ivf", "libvpx-vp9", b"VP90"),
    "h264": ("h264.ivf", "libx264", b"H264"),
    "mjpeg": ("mjpeg.ivf", "mjpeg", b"MJPG"),
}
VIDEO_EXTS = {ext: codec for codec, (ext, _, _) in CODECS.items()}

# Member extensions of a sample (`<key>.<ext>` inside the tar), in the order they are written.
META = "json"          # UTF-8 JSON object, see META_FIELDS
LABEL = "cls"          # action index as ASCII decimal (webdataset's convention for class labels)
SCENE = "scene.f32"    # 365 little-endian float32, a probability vector
BOXES = "boxes.msgpack"  # per decoded frame, a list of [x1, y1, x2, y2, score]
BOXES_RAW = "boxes.f32"  # the same boxes as little-endian float32 rows BOX_ROW, for DALI
DATA_MEMBERS = (META, LABEL, SCENE, BOXES, BOXES_RAW)

BOX_ROW = ("frame", "x1", "y1", "x2", "y2", "score")  # one row of boxes.f32
META_FIELDS = ("id", "label_name", "split", "fps", "frames", "width", "height", "codec", "segments")
# optional metadata: the scene model's argmax on each frame averaged into scene.f32, in frame order
# (the official hard label is their majority vote, `majority_vote`)
SCENE_VOTES = "scene_votes"

# webdataset splits a member name at the first dot of its base name: keys must have none.
KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,120}$")
# A member is `<key>.<ext>` at the top level of the tar; the extension may hold dots.
MEMBER_RE = re.compile(r"^([A-Za-z0-9_\-]{1,120})\.([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)$")


class ShardFormatError(ValueError):
    """A shard, sample or manifest does not follow the format; the message says what to do."""


@dataclass
class Sample:
    """One video as prep hands it to the writer: encoded video plus its annotations."""

    key: str
    video: "EncodedVideo"        # the IVF stream and its segment table (shards/video.py encode_video)
    codec: str                   # a key of CODECS
    boxes: list                  # per decoded frame: list of [x1, y1, x2, y2, score], normalised
    scene: np.ndarray            # float32[365], sums to 1
    label: int                   # action index into manifest["classes"]
    meta: dict = field(default_factory=dict)  # at least META_FIELDS
    scene_votes: list = field(default_factory=list)  # per frame averaged into scene: its argmax; empty: unknown


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise ShardFormatError(
            f"sample key {key!r} is not usable: keys are 1-120 characters of [A-Za-z0-9_-] "
            "(no dots: webdataset splits member names at the first dot)")
    return key


def member_key(name: str) -> tuple[str, str]:
    """`<key>.<ext>` -> (key, ext): the one rule that splits a tar member name (webdataset's: the
    key ends at the first dot). Any other name is refused, paths above all: `tarfile.extractall`
    would write `../x`, `/abs/x` or `a/../../b` outside the folder it extracts into."""
    m = MEMBER_RE.match(name)
    if m:
        return m.group(1), m.group(2)
    parts = name.split("/")
    why = ("an absolute path" if name.startswith("/") else "a path out of the folder" if ".." in parts
           else "a path inside a folder" if len(parts) > 1 else "not <key>.<ext> with a key of [A-Za-z0-9_-]")
    raise ShardFormatError(f"member {name!r} is {why}; shards hold only <key>.<ext> files at their top level")


def check_member(info: tarfile.TarInfo) -> tuple[str, str]:
    """(key, ext) of a tar member that can belong to a sample: a regular file with a valid name.
    Links, directories and devices are refused (a symlink or hard link escapes on extraction)."""
    if not info.isreg():
        kind = ("a symlink" if info.issym() else "a hard link" if info.islnk() else "a directory" if info.isdir()
                else "a device or fifo")
        raise ShardFormatError(f"member {info.name!r} is {kind}; shards hold only regular files")
    return member_key(info.name)


def boxes_to_raw(boxes: list) -> bytes:
    """Per-frame box lists -> boxes.f32 bytes: one row [frame, x1, y1, x2, y2, score] per box."""
    rows = [[t, *box] for t, frame_boxes in enumerate(boxes) for box in frame_boxes]
    return np.asarray(rows, dtype="<f4").reshape(-1, len(BOX_ROW)).tobytes()


def raw_to_rows(raw: bytes) -> np.ndarray:
    """boxes.f32 bytes -> float32 array (N, 6)."""
    if len(raw) % (4 * len(BOX_ROW)):
        raise ShardFormatError(f"boxes.f32 holds {len(raw)} bytes, not a whole number of rows")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, len(BOX_ROW)).astype(np.float32)


SCENE_SUM_TOL = 1e-3  # a scene label sums to 1 within this (FORMAT.md)


def scene_problem(scene: np.ndarray, votes=None) -> str:
    """What makes a scene label, or the metadata's scene votes when there are any, unusable (""
    when nothing does): the one rule the checker and the loader apply."""
    if not np.isfinite(scene).all():
        return "scene label holds NaN or inf"
    if (scene < 0).any() or abs(float(scene.sum()) - 1) > SCENE_SUM_TOL:
        return f"scene label is not a distribution (min {scene.min():.3g}, sum {scene.sum():.6f})"
    return scene_votes_problem(votes) if votes is not None else ""


def scene_votes_problem(votes) -> str:
    """What makes `scene_votes` unusable: the writer's check, and scene_problem's."""
    if isinstance(votes, list) and votes and all(isinstance(v, int) and not isinstance(v, bool)
                                                 and 0 <= v < NUM_SCENES for v in votes):
        return ""
    return f"metadata {SCENE_VOTES} is {str(votes)[:60]}, not a list of scene indices in [0, {NUM_SCENES})"


def majority_vote(votes: list[int]) -> int:
    """The official hard scene label: the scene most frames vote for, a tie going to the lowest
    index (vt-vl-lab/SDN datasets/kinetics.py:412, `np.bincount(place_index).argmax()`)."""
    return int(np.bincount(np.asarray(votes, np.int64), minlength=NUM_SCENES).argmax())


def encode_members(sample: Sample) -> dict[str, bytes]:
    """Sample -> {member extension: bytes}, in the order they go into the tar."""
    check_key(sample.key)
    if sample.codec not in CODECS:
        raise ShardFormatError(f"unknown codec {sample.codec!r}; known: {sorted(CODECS)}")
    scene = np.asarray(sample.scene, dtype="<f4")
    if scene.shape != (NUM_SCENES,):
        raise ShardFormatError(f"scene label of {sample.key} has shape {scene.shape}, not ({NUM_SCENES},)")
    boxes = [[[float(v) for v in box] for box in frame] for frame in sample.boxes]
    if any(len(box) != 5 for frame in boxes for box in frame):
        raise ShardFormatError(f"boxes of {sample.key}: every box is [x1, y1, x2, y2, score]")
    votes = [int(v) if isinstance(v, np.integer) else v for v in sample.scene_votes]  # numpy's are ints too
    if votes and (why := scene_votes_problem(votes)):
        raise ShardFormatError(f"scene label of {sample.key}: {why}")
    meta = {"id": sample.key, "codec": sample.codec, **sample.meta, **({SCENE_VOTES: votes} if votes else {}),
            "segments": [list(seg) for seg in sample.video.segments]}
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise ShardFormatError(f"metadata of {sample.key} lacks {missing}")
    if meta["frames"] != sample.video.frames:
        raise ShardFormatError(f"metadata of {sample.key} says {meta['frames']} frames, the video holds "
                               f"{sample.video.frames}")
    return {
        META: json.dumps(meta, sort_keys=True).encode(),
        LABEL: str(int(sample.label)).encode(),
        SCENE: scene.tobytes(),
        BOXES: msgpack.packb(boxes, use_single_float=True),
        BOXES_RAW: boxes_to_raw(boxes),
        CODECS[sample.codec][0]: bytes(sample.video.data),
    }


def video_member(members: dict[str, bytes]) -> tuple[str, bytes]:
    """The (extension, bytes) of the one video member of a sample."""
    found = [ext for ext in members if ext in VIDEO_EXTS]
    if len(found) != 1:
        raise ShardFormatError(f"expected one video member ({'/'.join(VIDEO_EXTS)}), found {found}")
    return found[0], members[found[0]]


def decode_members(key: str, members: dict[str, bytes]) -> dict:
    """{extension: bytes} -> plain dict with decoded annotations; the video stays encoded."""
    missing = [m for m in DATA_MEMBERS if m not in members]
    if missing:
        raise ShardFormatError(f"sample {key} lacks member(s) {', '.join(missing)}")
    try:
        ext, video = video_member(members)
    except ShardFormatError as err:
        raise ShardFormatError(f"sample {key}: {err}") from None
    scene = _parse(key, SCENE, lambda data: np.frombuffer(data, dtype="<f4"), members[SCENE])
    if scene.shape != (NUM_SCENES,):
        raise ShardFormatError(f"sample {key}: scene.f32 holds {scene.size} floats, not {NUM_SCENES}")
    meta = _parse(key, META, json.loads, members[META])
    if not isinstance(meta, dict):
        raise ShardFormatError(f"sample {key}: {META} holds a JSON {type(meta).__name__}, not an object")
    return {
        "key": key,
        "video_bytes": video,
        "codec": VIDEO_EXTS[ext],
        "boxes": _parse(key, BOXES, msgpack.unpackb, members[BOXES]),
        "boxes_raw": _parse(key, BOXES_RAW, raw_to_rows, members[BOXES_RAW]),
        "scene": scene.astype(np.float32),
        "label": _parse(key, LABEL, lambda data: int(data.decode("ascii")), members[LABEL]),
        "meta": meta,
    }


def _parse(key: str, member: str, parse, data: bytes):
    """parse(data), or one ShardFormatError naming the sample and the member: garbage makes json,
    msgpack and int() raise many kinds of error, some of them without a message."""
    try:
        return parse(data)
    except Exception as err:
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise ShardFormatError(f"sample {key}: {member} is unreadable ({detail})") from None
