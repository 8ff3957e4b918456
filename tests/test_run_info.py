"""usersim.data_prep.run_info.peak_rss_mb: the one peak-memory figure of stages and benchmarks."""

import json
import subprocess
import sys

# Linux keeps a process's peak RSS across fork/exec, so the child's size is set relative to ours.
SCRIPT = """
import json, subprocess, sys
from usersim.data_prep.run_info import peak_rss_mb
target = int(peak_rss_mb()) + 300
subprocess.run([sys.executable, "-c", f"b = bytearray({target} * 2**20); b[::4096] = bytes(len(b[::4096]))"],
               check=True)
print(json.dumps([peak_rss_mb(), peak_rss_mb(children=True), target]))
"""


def test_peak_rss_counts_children_only_when_asked():
    """A process whose finished child touched 300 MB more than its own peak: only children=True sees it."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    own, with_children, target = json.loads(out.stdout)
    assert 0 < own < target <= with_children
