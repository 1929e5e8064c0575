"""JSONL / CSV sources read in bounded memory: a record costs a few times its size while parsed, and
a line over MAX_RECORD_BYTES is never held whole -- it is a bad line (one-line error naming
--skip-bad-lines, or skipped and counted with it), not a memory spike."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge.data import readers
from lmforge.data.sources import CollectConfig, Collector, SourceSpec
from lmforge.errors import UserError

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="peak RSS is measured through Linux's /proc"
)

# Peak RSS of reading `path` in a fresh interpreter, above what it held after the imports. Measured
# as VmHWM after resetting it (clear_refs 5): getrusage's maxrss keeps the parent's peak from the fork.
_PEAK = textwrap.dedent(
    """
    import sys
    from lmforge.data import readers
    from lmforge.data.sources import CollectConfig, Collector, SourceSpec
    if len(sys.argv) > 2:
        readers.MAX_RECORD_BYTES = int(sys.argv[2])
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = hwm()
    n = sum(1 for _ in Collector([SourceSpec(sys.argv[1])], CollectConfig(skip_bad_lines=True)))
    print(n, hwm() - base)
    """
)


def _big_jsonl(path: Path, n_bytes: int) -> int:
    """One record of lines of words (escapes in the JSON, breaks to cut at), written in pieces: the
    test process stays small, since a child's peak RSS starts from its parent's at the fork."""
    piece = json.dumps(("word " * 9 + "\n") * 1000)[1:-1]
    with open(path, "w") as fh:
        fh.write('{"text": "')
        for _ in range(n_bytes // len(piece)):
            fh.write(piece)
        fh.write('"}\n' + json.dumps({"text": "a small record after it"}) + "\n")
    return path.stat().st_size


def _peak(path: Path, *extra: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), *extra], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.slow
def test_a_long_jsonl_record_costs_a_few_times_its_size(tmp_path):
    path = tmp_path / "one_line.jsonl"
    size = _big_jsonl(path, 30_000_000)
    n_docs, peak = _peak(path)
    assert n_docs > 1000  # split into documents at line breaks, never cut off
    assert peak < 3.3 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB line"


@pytest.mark.slow
def test_a_jsonl_line_over_the_limit_is_never_held_whole(tmp_path):
    path = tmp_path / "one_line.jsonl"
    size = _big_jsonl(path, 30_000_000)
    n_docs, peak = _peak(path, str(2 << 20))  # a 2 MB limit for the test
    assert n_docs == 1  # the long line skipped and counted, the small record read
    assert peak < size / 2, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB line"


def test_a_jsonl_line_over_the_limit_is_a_bad_line(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 1000)
    path = tmp_path / "notes.jsonl"
    path.write_text(json.dumps({"text": "x " * 2000}) + "\n" + json.dumps({"text": "kept"}) + "\n")
    with pytest.raises(UserError, match=r"notes.jsonl:1: a record of .* --skip-bad-lines"):
        list(Collector([SourceSpec(str(path))], CollectConfig()))
    collector = Collector([SourceSpec(str(path))], CollectConfig(skip_bad_lines=True))
    assert [doc for doc, _ in collector] == ["kept"]
    assert collector.stats["notes"].bad_lines == 1


def test_a_csv_field_over_the_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 1000)
    path = tmp_path / "notes.csv"
    path.write_text("text\n" + "x" * 5000 + "\nkept\n")
    with pytest.raises(UserError, match=r"notes.csv:\d+: a field over the .* MB"):
        list(Collector([SourceSpec(str(path))], CollectConfig()))
