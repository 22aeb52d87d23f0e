"""Metrics to metrics.jsonl (one JSON object per line) and TensorBoard, from rank 0."""
from __future__ import annotations

import json
from pathlib import Path


class MetricLog:
    def __init__(self, out: str | Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.file = open(Path(out) / "metrics.jsonl", "a")
            self.tb = SummaryWriter(str(Path(out) / "tb"))

    def log(self, kind: str, step: int, **values) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self.file.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self.tb.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()
