"""Files written so that a crash never leaves half of one, and file digests: one helper each,
for shards, prep records, the synthetic set and checkpoints alike."""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """`with atomic_open(path) as f: f.write(...)`: readers see the old file or the whole new one.
    The temporary file beside `path` is named per process (ranks writing the same file do not
    collide) and removed when the block fails (a full disk, say)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> None:
    with atomic_open(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
