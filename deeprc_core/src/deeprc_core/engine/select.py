"""Which engine runs an operation, and the collective check that its inputs are usable.

``engine="auto"`` picks Cylon when pycylon imports, the communicator is MPI (Cylon runs
over MPI only) and the operation is one of :data:`CYLON_AUTO_OPS`, those proven equal to
the Arrow engine on a real pycylon (tests/core/test_engine_cylon.py); otherwise it picks
the built-in Arrow engine. Every rank decides from the same facts, so every rank picks
the same engine. Per-table screening (types, null keys, empty partitions) happens later,
in the Cylon adapter, and may still fall back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal

import pyarrow as pa

from ..comm.base import Communicator, agree
from ..errors import SchemaError

logger = logging.getLogger("deeprc.engine")

Engine = Literal["auto", "cylon", "arrow"]
ENGINES = ("auto", "cylon", "arrow")


#: how to get pycylon, in every error that needs it
PYCYLON_HINT = (
    "pycylon is not installed. It is not on PyPI: install it with conda "
    "('conda install -c cylondata pycylon'), load your cluster's Cylon module, or build it "
    "from source (`./dev cylon` in a Deep RC checkout); Deep RC then uses it automatically."
)


@lru_cache(maxsize=1)
def pycylon_available() -> bool:
    """True when ``import pycylon`` works in this process."""
    try:
        import pycylon  # noqa: F401
    except ImportError:
        return False
    return True


#: Operations ``engine="auto"`` hands to Cylon. Not shuffle: its placement must follow Deep
#: RC's own hash (engine/hashing.py) so that tables shuffled separately, possibly by
#: different engines after a type fallback, still put equal keys on the same rank.
CYLON_AUTO_OPS = frozenset({"join", "sort", "groupby", "drop_duplicates"})


def choose_engine(engine: str, comm: Communicator, what: str) -> str:
    """``"cylon"`` or ``"arrow"`` for ``engine`` (``auto|cylon|arrow``) on this communicator."""
    if engine not in ENGINES:
        raise ValueError(f"{what}: engine must be one of {ENGINES}, not {engine!r}")
    if engine == "arrow":
        return "arrow"
    usable = pycylon_available() and comm.kind == "mpi"
    if engine == "cylon":
        if not pycylon_available():
            raise ImportError(f"{what}(engine='cylon'): {PYCYLON_HINT}")
        if comm.kind != "mpi":
            raise ValueError(f"{what}(engine='cylon') needs the MPI communicator; this job uses {comm.kind!r}")
        return "cylon"
    return "cylon" if usable and what in CYLON_AUTO_OPS else "arrow"


def as_list(columns: str | Sequence[str] | None) -> list[str]:
    """A column name or names as a list (None -> [])."""
    if columns is None:
        return []
    if isinstance(columns, str):
        return [columns]
    return list(columns)


def missing_columns(schema: pa.Schema, columns: Sequence[str], what: str, side: str = "") -> None:
    """Raise SchemaError naming the ``columns`` that ``schema`` lacks."""
    names = schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        where = f" of the {side} table" if side else ""
        raise SchemaError(f"{what}: no column(s) {missing}{where}; it has {names}")


def validate_everywhere(comm: Communicator, what: str, check: Callable[[], None]) -> None:
    """Run the local ``check``; if it fails on any rank, raise on every rank (never hang).

    Any exception counts (pyarrow's ArrowNotImplementedError, say, is a NotImplementedError):
    a rank that raised alone would leave the others waiting in the next collective.
    """
    err: BaseException | None = None
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - every kind must reach the other ranks
        err = exc
    agree(comm, err, what)
