"""How many CPU threads torch uses for work done in the run's own process.

`make` exports OMP_NUM_THREADS=1 (several processes share a small machine), which makes torch use one core
for in-process work too; generation and embedding ask for theirs explicitly, and give the setting back after.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` torch threads (None: every core), then restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    wanted = threads or os.cpu_count() or 1
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)
