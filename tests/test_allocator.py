"""train.allocator=reuse: glibc keeps freed memory, so a step's big tensors stop page-faulting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from lmforge.config import TrainConfig
from lmforge.errors import UserError

# Allocates and frees a 48 MB tensor (over glibc's largest mmap threshold, 32 MB) 40 times, then
# prints the page faults of 20 more: with reuse on, the heap has by then the room to serve them all
# from memory it already holds (torch's aligned allocations take a few rounds to settle).
PROGRAM = """
import resource, sys, torch
from lmforge import hardware
if sys.argv[1] == "reuse":
    assert hardware.reuse_freed_memory()
for _ in range(40):
    torch.empty(12 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(12 * 2**20).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_reused_memory_stops_the_page_faults():
    pages = 48 * 2**20 // 4096  # one tensor's 4 KB pages
    assert _faults("system") >= 10 * pages  # glibc's default: fresh pages on every allocation
    assert _faults("reuse") < pages // 4


def test_allocator_setting_is_checked():
    with pytest.raises(UserError, match="train.allocator 'fast' is not one of reuse, system"):
        TrainConfig(allocator="fast")
