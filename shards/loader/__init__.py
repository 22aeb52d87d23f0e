"""The loader: training and evaluation batches from shards, human-masked copies made on the fly.

    sampling.py       which samples each rank reads, and how each clip is cut (pure functions of
                      (seed, epoch, sample)); the split's index of byte ranges, metadata and boxes
    masking.py        box rectangles in crop coordinates, the masked copy, normalisation
    torch_decoder.py  the reference decoder: PyAV in DataLoader workers
    dali_decoder.py   DALI's decoder (NVDEC on the GPU, the CPU decoder otherwise); imported only
                      when asked for
    clip_loader.py    ClipLoader and build_loader, what a trainer iterates
    preview.py        shards-preview: a picture of clips as the loader delivers them
    workers.py        DataLoader workers that end with their trainer
"""
from .clip_loader import ClipLoader, build_loader, describe
from .sampling import LoaderConfig, MaskFilter, SplitIndex, params_of
from .torch_decoder import cores_per_process

__all__ = ["ClipLoader", "LoaderConfig", "MaskFilter", "SplitIndex", "build_loader", "cores_per_process", "describe",
           "params_of"]
