"""SLURM's compact host and task lists (``nid[001-003],login1``, ``2(x3),1``), expanded.

Read by the core's SLURM wiring (rank 0's host) and by deeprc-launch (every rank's host).
"""

from __future__ import annotations

import re


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list such as ``nid[001-003,007],login1`` into host names, in order."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not m:
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for item in ranges.split(","):
            if "-" in item:
                lo, hi = item.split("-", 1)
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{item}{suffix}")
    return hosts


def slurm_tasks_per_node(spec: str) -> list[int]:
    """Expand SLURM's ``2(x3),1`` tasks-per-node notation into ``[2, 2, 2, 1]`` (``[]`` when malformed)."""
    counts: list[int] = []
    for item in filter(None, spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not m:
            return []
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts
