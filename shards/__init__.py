"""The shard format contract: schema, writer, manifest, reference reader, checker."""
from .format import FORMAT_NAME, FORMAT_VERSION, NUM_SCENES, Sample, ShardFormatError
from .manifest import add_split, new_manifest, read_manifest, write_manifest
from .reader import iter_samples
from .video import decode_video, encode_video
from .writer import ShardWriter

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "NUM_SCENES", "Sample", "ShardFormatError",
           "ShardWriter", "add_split", "decode_video", "encode_video", "iter_samples",
           "new_manifest", "read_manifest", "write_manifest"]
