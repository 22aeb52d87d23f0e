"""Metrics to metrics.jsonl (one JSON object per line) and TensorBoard, from rank 0.

A resumed run cuts metrics.jsonl back to what it held when its checkpoint was written
(`keep_bytes`, recorded in the checkpoint), so that after a kill -9 between two checkpoints the
steps redone are logged once, not twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class MetricLog:
    def __init__(self, out: str | Path, enabled: bool, keep_bytes: int = 0):
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.file = open(Path(out) / "metrics.jsonl", "a")
            if self.position() > keep_bytes:
                self.file.truncate(keep_bytes)
            self.tb = SummaryWriter(str(Path(out) / "tb"))

    def log(self, kind: str, step: int, **values) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self.file.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self.tb.add_scalar(f"{kind}/{name}", value, step)

    def position(self) -> int:
        """Bytes of metrics.jsonl written so far (0 on the ranks that do not log)."""
        return os.fstat(self.file.fileno()).st_size if self.enabled else 0

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()
