"""The torch loader's workers (capped at the cores, kept across epochs), the README loader
snippet as a script, and our samples in a plain webdataset pipeline."""
from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shards import ShardFormatError, iter_samples, read_manifest
from shards.loader import build_loader, cores_per_process
from shards.wds import decode_sample

README = Path(__file__).resolve().parents[1] / "README.md"


def test_torch_loader_caps_workers_and_keeps_them_across_epochs(synth_shards):
    loader = build_loader(synth_shards, "train", backend="torch", batch_size=2, frames=8, size=40, device="cpu",
                          num_threads=64)
    assert loader.decoder.num_workers == cores_per_process() < 64
    before = {p.pid for p in multiprocessing.active_children()}  # other tests' processes
    workers, batches = [], []
    for epoch in range(3):
        loader.set_epoch(epoch)
        keys = []
        for batch in loader:
            keys += batch["key"]
            seen = {p.pid for p in multiprocessing.active_children()} - before
        workers.append(seen)
        batches.append(keys)
    assert len(workers[0]) == loader.decoder.num_workers
    assert workers[0] == workers[1] == workers[2]  # the same processes served every epoch
    # each epoch still gets its own order, and an epoch read again is the same
    assert batches[0] != batches[1]
    loader.set_epoch(1)
    assert [k for b in loader for k in b["key"]] == batches[1]


def readme_loader_script(shards: Path) -> str:
    """The README's loader snippet, pointed at test shards and the CPU reference backend."""
    text = README.read_text()
    snippet = re.search(r"### Loading batches\n\n```python\n(.*?)```", text, re.S).group(1)
    for old, new in (('"data/synth-shards"', repr(str(shards))), ('backend="dali"', 'backend="torch"'),
                     ('device="cuda"', 'device="cpu"'), ("batch_size=32", "batch_size=4"), ("size=112", "size=40"),
                     ("frames=16", "frames=8")):
        assert old in snippet, f"the README snippet no longer has {old}"
        snippet = snippet.replace(old, new)
    snippet, body = re.subn(r"^( +)\.\.\..*$", r"\1print(epoch, batch['clip'].shape[0])", snippet, flags=re.M)
    assert body == 1, "the README snippet's loop body is no longer one '...' line"
    return snippet


def test_readme_loader_snippet_runs_as_a_script(synth_shards, tmp_path):
    script = tmp_path / "train_loop.py"
    script.write_text(readme_loader_script(synth_shards))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split()
    assert lines[0] == "0" and lines[-2] == "1" and set(lines[1::2]) == {"4"}


def test_webdataset_pipeline_gives_what_the_reference_reader_gives(synth_shards):
    import webdataset as wds

    manifest = read_manifest(synth_shards)
    urls = [str(synth_shards / s["tar"]) for s in manifest["splits"]["train"]["shards"]]
    got = list(wds.WebDataset(urls, shardshuffle=False).map(decode_sample))
    want = list(iter_samples(synth_shards, "train"))
    assert [s["key"] for s in got] == [s["key"] for s in want] and len(got) == manifest["splits"]["train"]["samples"]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a["video"], b["video"])
        np.testing.assert_array_equal(a["scene"], b["scene"])
        np.testing.assert_array_equal(a["boxes_raw"], b["boxes_raw"])
        assert a["boxes"] == b["boxes"] and a["label"] == b["label"] and a["meta"] == b["meta"]
        assert a["video"].shape == (a["meta"]["frames"], a["meta"]["height"], a["meta"]["width"], 3)
    # after another decoder the members are no longer bytes: say so rather than misread them
    with pytest.raises(ShardFormatError, match="members must be raw bytes: use decode_sample in .map"):
        next(iter(wds.WebDataset(urls, shardshuffle=False).decode().map(decode_sample)))
