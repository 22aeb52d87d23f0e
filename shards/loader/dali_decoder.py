"""The DALI decoder of the loader: every DALI op name this project uses lives here.

Python picks the samples and frames (shards/loader/sampling.py) and reads, through the shard index
files, only the video segments each clip spans (SplitIndex.clip_stream); DALI decodes only the
frames of each clip (NVDEC via the "mixed"
backend on a GPU, FFmpeg's CPU decoders otherwise: VP8, VP9, MJPEG), slices the crop, flips,
normalises and lays it out channels-first in one crop_mirror_normalize (what
shards/loader/masking.py normalise does in torch for the reference loader; in DALI the loader took 0.86x
the CPU per clip on 2 cores, benchmarks/README.md), and computes the full-frame means the
masking needs. Batches reach torch on the device without a trip through the host. Feeding DALI
from Python, instead of fn.readers.webdataset, is what gives both backends the same clips,
every rank the same number of batches, per-epoch reshuffles from (seed, epoch), and an exact
resume position.
"""
from __future__ import annotations

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from ..format import ShardFormatError
from .masking import CLIP_MEAN, CLIP_STD
from .sampling import params_of



class DaliDecoder:
    def __init__(self, batch_size: int, num_threads: int, device: torch.device, size: int):
        self.batch_size, self.num_threads, self.device, self.size = batch_size, num_threads, device, size
        self._plan, self._job = [], None

    def _source(self, info):
        """Batch `info.iteration` of the plan: encoded bytes (read now, not ahead), frames, crop."""
        if info.iteration >= len(self._plan):
            raise StopIteration
        index, cfg, epoch = self._job
        videos, frames, starts, sides, flips = [], [], [], [], []
        for sample, clip in self._plan[info.iteration]:
            p = params_of(index, cfg, epoch, sample, clip)
            stream, wanted = index.clip_stream(sample, p.frames)
            videos.append(np.frombuffer(stream, np.uint8))
            frames.append(wanted.astype(np.int32))
            starts.append(np.array([p.y0, p.x0], np.int32))
            sides.append(np.array([p.side or cfg.size] * 2, np.int32))
            flips.append(np.array(p.flip, np.int32))
        return videos, frames, starts, sides, flips

    def _pipeline(self):
        gpu = self.device.type == "cuda"
        resize = self._job[1].crop != "random"

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, prefetch_queue_depth=2,
                      device_id=(self.device.index or 0) if gpu else None, exec_dynamic=True)
        def pipe():
            video, frames, start, side, flip = fn.external_source(source=self._source, num_outputs=5, batch=True,
                                                                  batch_info=True, dtype=[types.UINT8] + [types.INT32] * 4)
            decoded = fn.decoders.video(video, device="mixed" if gpu else "cpu", frames=frames)
            crop = fn.slice(decoded, start, side, axis_names="HW")
            if resize:  # crop "corner": the crop resized as torch_decoder.py resized does it
                crop = fn.resize(crop, size=[self.size, self.size], interp_type=types.INTERP_LINEAR, antialias=True)
            clip = fn.crop_mirror_normalize(crop, mirror=flip, mean=[255 * m for m in CLIP_MEAN], std=[255 * s for s in CLIP_STD],
                                            output_layout="CFHW", dtype=types.FLOAT)
            means = fn.reductions.mean(decoded, axis_names="HW", dtype=types.FLOAT)
            return clip, means

        return pipe()

    def run(self, index, cfg, epoch, plan):
        """Per batch of `plan`, on the device: the clips as shards/loader/masking.py normalise makes them, and
        the full-frame means."""
        self._plan, self._job = plan, (index, cfg, epoch)
        if not plan:
            return
        iterator = DALIGenericIterator([self._pipeline()], ["clip", "means"], auto_reset=False,
                                       last_batch_policy=LastBatchPolicy.PARTIAL, prepare_first_batch=False)
        for items in plan:
            try:
                out = next(iterator)
            except StopIteration:
                return
            except RuntimeError as err:  # a decoder error inside the graph: name the batch it came from
                first = " ".join(str(err).split("\n")[0].split())[:200]
                raise ShardFormatError(f"DALI could not decode a video of the batch of "
                                       f"{', '.join(index.where(s) for s, _ in items)}: {first}") from None
            yield out[0]["clip"], out[0]["means"]
