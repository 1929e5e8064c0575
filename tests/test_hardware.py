"""hardware.busy_cpus: what other work keeps the machine's CPUs doing, the look --auto takes before it
decides whether the thread count is worth timing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lmforge import hardware

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux's /proc/stat")


def test_a_process_spinning_beside_us_shows_as_about_one_busy_cpu():
    spin = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.3)  # it is running
        busy = hardware.busy_cpus(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and 0.8 <= busy <= (os.cpu_count() or 1) + 0.01, busy


def test_a_look_that_spans_our_own_work_counts_only_the_others():
    spin = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.3)
        look = hardware.cpu_look()
        end = time.monotonic() + 0.6
        while time.monotonic() < end:  # this process keeps a CPU of its own busy meanwhile
            pass
        started = time.monotonic()
        busy = hardware.busy_cpus(0.5, since=look)  # the look is older than 0.5 s: no sleep
        waited = time.monotonic() - started
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and 0.7 <= busy <= 1.5, busy  # the child's CPU, not ours as well
    assert waited < 0.2


def test_an_unreadable_or_frozen_stat_file_is_none(tmp_path):
    assert hardware.busy_cpus(0.01, stat=str(tmp_path / "missing")) is None
    frozen = tmp_path / "stat"
    frozen.write_text("cpu  10 0 10 100 0 0 0 0 0 0\n")  # no time passes in it: nothing to say
    assert hardware.busy_cpus(0.01, stat=str(frozen)) is None
    frozen.write_text("cpu  garbage\n")
    assert hardware.busy_cpus(0.01, stat=str(frozen)) is None
