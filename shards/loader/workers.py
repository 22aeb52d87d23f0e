"""DataLoader workers that end with the process they work for.

The torch loader's workers are forked from a forkserver, so their parent is the forkserver, not
the trainer; and the forkserver lives as long as any worker holds its pipe. After a kill -9 of
the trainer both would stay (about 0.8 GB, indefinitely). So each worker watches the trainer
itself, through a pidfd (a reused pid cannot fool it), and exits the moment it is gone; the
forkserver then sees its last client leave and exits too.

Workers also ignore SIGINT: Ctrl-C reaches the whole process group, and the trainer, which
answers it with a checkpoint, still needs its workers to get there.
"""
from __future__ import annotations

import functools
import os
import select
import signal
import threading
import time
from collections.abc import Callable


def tied_to_this_process() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` for workers of the calling process."""
    return functools.partial(_init_worker, os.getpid())


def _init_worker(owner: int, worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(owner,), name="exit-with-owner", daemon=True).start()


def _exit_with(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll
        while _alive(pid):
            time.sleep(1)
    else:
        select.select([fd], [], [])  # readable once the process has exited
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
