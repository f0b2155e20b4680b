"""Memory figures of the current process, for every benchmark in bench/.

Why not ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: on Linux that high-water mark is inherited across
``fork`` and kept across ``exec``, so a fresh worker started by a large parent (the benchmark driver holding
generated data, or a test runner) reports the *parent's* peak (a child of a 1.5 GB parent said 1511 MB while
its own high-water mark was 10 MB). ``VmHWM`` in ``/proc/self/status`` is the peak resident set of this
process's own address space, which exec starts anew.
"""

from __future__ import annotations

from pathlib import Path


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"/proc/self/status has no {key} (not Linux?)")


def peak_rss_mb() -> float:
    """This process's own peak resident set size (VmHWM), in MB (MiB)."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """This process's resident set size now (VmRSS), in MB (MiB)."""
    return _status_mb("VmRSS")
