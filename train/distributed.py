"""One way to run on 1 or N processes: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def visible_device() -> str:
    """cuda when one is visible: the --device default of the programs that evaluate or measure."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_distributed(device: str) -> Dist:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    rank, local, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but no CUDA device is visible (use --device cpu)")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, local, world, dev)


def print0(*args, **kwargs) -> None:
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs, flush=True)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over the ranks (identity on one process)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
