"""Write one shard atomically: a tar of samples plus its DALI index file.

Both files are written under temporary names and renamed into place only when complete, the
index first and the tar last, so a shard whose .tar exists is whole (a resumed prep can trust
it) and a crash leaves only `*.tmp` files, which the next writer of that shard overwrites.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from .files import file_sha256
from .format import Sample, ShardFormatError, encode_members
from .index import format_index

BLOCK = tarfile.BLOCKSIZE


class ShardWriter:
    """`with ShardWriter(out_dir, "train-000003") as w: w.write(sample)` -> train-000003.tar/.idx

    The tar is deterministic (fixed member order, mtime 0, no owner names), so equal samples
    give byte-identical shards. An exception inside the block discards the shard.
    """

    def __init__(self, out_dir: str | Path, name: str):
        self.out_dir = Path(out_dir)
        self.name = name
        self.tar_path = self.out_dir / f"{name}.tar"
        self.idx_path = self.out_dir / f"{name}.idx"
        self._tmp = self.out_dir / f"{name}.tar.tmp"
        self._index: list[list[tuple[str, int, int, str]]] = []
        self._keys: set[str] = set()
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> "ShardWriter":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.GNU_FORMAT)
        return self

    def write(self, sample: Sample) -> None:
        if sample.key in self._keys:
            raise ShardFormatError(f"duplicate sample key {sample.key!r} in shard {self.name}")
        members = []
        for ext, data in encode_members(sample).items():
            name = f"{sample.key}.{ext}"
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
            # after addfile, tar.offset is past the data padded to whole blocks
            data_offset = self._tar.offset - -(-len(data) // BLOCK) * BLOCK
            members.append((ext, data_offset, len(data), name))
        self._keys.add(sample.key)
        self._index.append(members)

    def __len__(self) -> int:
        return len(self._index)

    def __exit__(self, exc_type, exc, tb) -> None:
        idx_tmp = self.idx_path.with_name(self.idx_path.name + ".tmp")
        finished = False
        try:
            self._tar.close()  # writes the tar's end blocks: fails too when the disk is full
            if exc_type is None and self._index:  # else failed, or nothing to write (DALI cannot read an empty shard)
                _fsync(self._tmp)
                idx_tmp.write_text(format_index(self._index))
                _fsync(idx_tmp)
                os.replace(idx_tmp, self.idx_path)
                os.replace(self._tmp, self.tar_path)
                finished = True
        except OSError:
            if exc_type is None:
                raise
            # the block failed already (a full disk, say) and closing failed with it: report the first error only
        finally:
            if not finished:  # leave no shard and no temporary file
                self._tmp.unlink(missing_ok=True)
                idx_tmp.unlink(missing_ok=True)

    def info(self) -> dict:
        """The manifest entry of the finished shard."""
        return {"tar": self.tar_path.name, "index": self.idx_path.name,
                "samples": len(self._index), "bytes": self.tar_path.stat().st_size,
                "sha256": file_sha256(self.tar_path)}


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
