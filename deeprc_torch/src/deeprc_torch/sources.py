"""Where a DataModule's tables come from: a GlobalTable, a path, or a callable run on every rank."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Union

from deeprc_core import GlobalTable, read_csv, read_ipc, read_parquet

#: A table, a file or folder (Parquet, CSV, Arrow IPC/Feather), or a function returning a table.
Source = Union[GlobalTable, str, "os.PathLike[str]", Callable[[], GlobalTable]]

_CSV = (".csv", ".csv.gz", ".txt")
_IPC = (".arrow", ".feather", ".ipc")


def read_path(path: str | os.PathLike[str]) -> GlobalTable:
    """Read a Parquet/CSV/Arrow file or folder, each rank its own share (collective)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(_CSV):
        return read_csv(p)
    if name.endswith(_IPC):
        return read_ipc(p)
    if p.is_dir():
        files = [f.name.lower() for f in p.rglob("*") if f.is_file()]
        if not any(f.endswith(".parquet") for f in files):
            if any(f.endswith(_CSV) for f in files):
                return read_csv(p)
            if any(f.endswith(_IPC) for f in files):
                return read_ipc(p)
    return read_parquet(p)


def resolve(source: Source, what: str) -> GlobalTable:
    """The GlobalTable of ``source``; callables are called here (on every rank)."""
    if isinstance(source, GlobalTable):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_path(source)
    if callable(source):
        table = source()
        if not isinstance(table, GlobalTable):
            raise TypeError(
                f"{what}: the source function returned {type(table).__name__}, not a deeprc_core.GlobalTable"
            )
        return table
    raise TypeError(
        f"{what}: give a GlobalTable, a path or a function returning a GlobalTable, not {type(source).__name__}"
    )


def split_table(table: GlobalTable, fractions: Sequence[float], random: bool, seed: int) -> list[GlobalTable]:
    """Parts of ``table`` by global row order (or a seeded random assignment), one per fraction."""
    if not 2 <= len(fractions) <= 3:
        raise ValueError(f"split={list(fractions)}: give 2 (train, val) or 3 (train, val, test) fractions")
    return table.split(list(fractions), ordered=not random, seed=seed)
