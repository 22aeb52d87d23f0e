"""Our samples in a plain webdataset pipeline, for code that reads shards with `webdataset`.

    import json
    import webdataset as wds
    from shards.wds import decode_sample

    tars = [f"data/mk200/{s['tar']}" for s in json.load(open("data/mk200/manifest.json"))["splits"]["train"]["shards"]]
    for sample in wds.WebDataset(tars, shardshuffle=False).map(decode_sample):
        ...   # key, video (uint8 T x H x W x 3 RGB), boxes, boxes_raw, scene, label, meta

webdataset's own video decoder (`torch_video`) goes through torchvision's video reader, which
the pinned torchvision no longer has; and `scene.f32` / `boxes.msgpack` are ours. This decodes a
raw webdataset sample (one bytes value per member) with the same code as the reference reader
(`shards.format.decode_members`, `shards.video.decode_video`), so it gives what
`shards.iter_samples` gives and follows the format wherever it changes (e.g. the video member's
extension). Use it in `.map(...)` instead of `.decode(...)`; it needs no other webdataset
decoder, and it leaves the loaders' random clips, crops and masking to you (shards/loader/
does those).
"""
from __future__ import annotations

from .format import ShardFormatError, decode_members
from .video import decode_video


def decode_sample(sample: dict, video: bool = True) -> dict:
    """A webdataset sample {"__key__": key, "json": bytes, "cls": bytes, ...} -> the reference
    reader's dict: key, video (with video=True), video_bytes, codec, boxes, boxes_raw, scene,
    label, meta. A sample that breaks the format raises ShardFormatError naming its shard and key."""
    key = sample["__key__"]
    members = {ext: data for ext, data in sample.items() if not ext.startswith("__")}
    if not all(isinstance(data, bytes) for data in members.values()):
        raise ShardFormatError(f"sample {key}: members must be raw bytes: use decode_sample in .map() "
                               "without a .decode() before it")
    try:
        out = decode_members(key, members)
        if video:
            out["video"] = decode_video(out["video_bytes"])
    except (ShardFormatError, ValueError) as err:
        raise ShardFormatError(f"{sample.get('__url__', '?')}: {key}: {err}") from None
    return out
