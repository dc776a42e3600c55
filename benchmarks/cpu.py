"""CPU seconds used so far by processes of this machine (Linux ``/proc``), for the benchmarks'
CPU-per-post figures: by process name (``postgres``, ``tansu``) or by process id."""

from __future__ import annotations

import os
from collections.abc import Iterable


def _stat(pid: str) -> tuple[str, float] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime of the process itself (the 12th and 13th fields after the name).
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(names: Iterable[str] = (), pids: Iterable[int] = ()) -> float:
    """CPU seconds so far of every process called one of ``names`` and of ``pids``."""
    wanted, ids = set(names), {str(p) for p in pids}
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        found = _stat(pid)
        if found is not None and (found[0] in wanted or pid in ids):
            total += found[1]
    return total
