"""Where a DataModule's tables come from: resolved by the core's adapter contract; split here."""

from __future__ import annotations

from collections.abc import Sequence

from deeprc_core.adapter import Source, read_path
from deeprc_core.adapter import resolve_source as resolve

from deeprc_core import GlobalTable

__all__ = ["Source", "read_path", "resolve", "split_table"]


def split_table(table: GlobalTable, fractions: Sequence[float], random: bool, seed: int) -> list[GlobalTable]:
    """Parts of ``table`` by global row order (or a seeded random assignment), one per fraction."""
    if not 2 <= len(fractions) <= 3:
        raise ValueError(f"split={list(fractions)}: give 2 (train, val) or 3 (train, val, test) fractions")
    return table.split(list(fractions), ordered=not random, seed=seed)
