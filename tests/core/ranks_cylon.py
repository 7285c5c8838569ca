"""Rank bodies of the real-Cylon tier: typed tables through every operation, failures, zero-copy.

Run under mpirun with pycylon importable (the environment `./dev cylon` builds). Each body
returns IPC bytes of inputs and local results plus the ``deeprc.engine`` log lines, so the
test can check both the results (against pyarrow on the gathered data) and which engine ran.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging

import numpy as np
import pyarrow as pa
from deeprc_core.exchange import table_to_bytes
from deeprc_core.table import GlobalTable

from deeprc_core import get_communicator

VOCAB = ["apple", "banana", "", "cherry", "dürüm", "egg", "fig" * 5, "grape"]


class Lines(logging.Handler):
    """Collects the messages of logger ``deeprc.engine``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def engine_log() -> Lines:
    """Start collecting the engine's log lines (fallbacks at INFO, Cylon runs at DEBUG)."""
    handler = Lines()
    log = logging.getLogger("deeprc.engine")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    return handler


def typed_part(seed: int, rank: int, rows: int = 80) -> pa.Table:
    """Every type Cylon can carry; keys (k, hot, s, b, f, ts) without nulls, the other columns with nulls."""
    rng = np.random.default_rng([seed, rank])
    n = rows + 13 * rank

    def nulls() -> np.ndarray:
        return rng.random(n) < 0.15

    base = dt.datetime(2024, 1, 1)
    return pa.table(
        {
            "k": pa.array(rng.integers(0, 12, n), pa.int64()),
            "hot": pa.array(np.where(rng.random(n) < 0.7, 42, rng.integers(0, 100, n)), pa.int64()),
            "s": pa.array(list(np.array(VOCAB, dtype=object)[rng.integers(0, len(VOCAB), n)]), pa.string()),
            "b": pa.array(rng.random(n) < 0.5),
            "f": pa.array(rng.integers(0, 5, n).astype(np.float64) / 4 - 0.5),
            "ts": pa.array([base + dt.timedelta(hours=int(h)) for h in rng.integers(0, 6, n)], pa.timestamp("us")),
            "i8": pa.array(rng.integers(-100, 100, n), pa.int8(), mask=nulls()),
            "i32": pa.array(rng.integers(-1000, 1000, n), pa.int32(), mask=nulls()),
            "u16": pa.array(rng.integers(0, 60000, n), pa.uint16(), mask=nulls()),
            "u64": pa.array(rng.integers(0, 2**40, n), pa.uint64(), mask=nulls()),
            "f32": pa.array(rng.normal(size=n).astype(np.float32), mask=nulls()),
            "bn": pa.array([bytes([i % 7]) * (i % 4) for i in range(n)], pa.binary(), mask=nulls()),
            "fsb": pa.array([bytes([i % 5, 1, 2]) for i in range(n)], pa.binary(3), mask=nulls()),
            "d32": pa.array(rng.integers(18000, 19000, n).astype(np.int32), pa.int32()).cast(pa.date32()),
            "t64": pa.array(rng.integers(0, 86_400_000_000, n), pa.int64(), mask=nulls()).cast(pa.time64("us")),
            "dur": pa.array(rng.integers(0, 10**6, n), pa.int64(), mask=nulls()).cast(pa.duration("ms")),
            "flag": pa.array(list(rng.random(n) < 0.5), pa.bool_(), mask=nulls()),
            "cat": pa.array(list(np.array(["x", "y", "z"], dtype=object)[rng.integers(0, 3, n)])).dictionary_encode(),
            "v": pa.array(rng.integers(-50, 50, n), pa.int64(), mask=nulls()),
            "w": pa.array(rng.normal(size=n), mask=nulls()),
        }
    )


def right_part(seed: int, rank: int) -> pa.Table:
    """A right-hand table sharing keys and the column name ``v`` (suffixes)."""
    t = typed_part(seed + 1000, rank, rows=50)
    return t.select(["k", "s", "b", "ts", "v", "flag", "dur"]).append_column(
        "r", pa.array(np.arange(t.num_rows), pa.int64())
    )


def awkward_part(seed: int, rank: int) -> pa.Table:
    """Columns Cylon cannot carry: large_string, float16, decimal, list (all non-key)."""
    t = typed_part(seed, rank, rows=30).select(["k", "hot", "s", "v"])
    n = t.num_rows
    return (
        t.append_column("ls", t.column("s").cast(pa.large_string()))
        .append_column("h", pa.array(np.arange(n, dtype=np.float16)))
        .append_column("dec", pa.array([decimal.Decimal(i) / 4 for i in range(n)], pa.decimal128(8, 2)))
        .append_column("lst", pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int64())))
    )


JOINS = [
    ("j_inner", {"on": "k", "how": "inner"}),
    ("j_left", {"on": "k", "how": "left"}),
    ("j_right", {"on": "k", "how": "right"}),
    ("j_outer", {"on": "k", "how": "outer"}),
    ("j_str_bool", {"on": ["s", "b"], "how": "inner"}),
    ("j_multi_outer", {"on": ["s", "ts"], "how": "outer"}),
]
SORTS = [
    ("s_hot", {"by": "hot", "ascending": False}),
    ("s_bool_float", {"by": ["b", "f"]}),
    ("s_str_ts", {"by": ["s", "ts"], "ascending": [False, True]}),
    ("s_int", {"by": "k"}),
]


def sorts(kind: str) -> list[tuple[str, dict]]:
    """The sorts run on a table of ``kind`` (the awkward table has no b/f/ts columns)."""
    return SORTS if kind == "typed" else [s for s in SORTS if s[0] in ("s_hot", "s_int")]


AGGS = {"v": ["sum", "mean", "count", "min", "max"], "w": ["sum", "mean", "min", "max"], "i32": ["sum", "mean"]}
GROUPS = [("g_str", ["s"]), ("g_bool_int", ["b", "k"]), ("g_ts", ["ts"])]
DEDUPES = [("d_bool_str", ["s", "b"]), ("d_bool_int", ["b", "k"]), ("d_all", None)]
#: the awkward table's dedupe keys: the uncarriable float16 and decimal columns among them; no string key (its
#: own fallback reason would come first) and no list key (neither engine hashes lists)
AWKWARD_DEDUPES = [("d_awkward", ["k", "hot", "v", "h", "dec"])]


def typed_ops(seed: str = "0", engine: str = "cylon", kind: str = "typed") -> dict[str, object]:
    """Every operation on the typed (or, with kind="awkward", the uncarriable) tables."""
    comm = get_communicator()
    log = engine_log()
    s = int(seed)
    if kind == "typed":
        lpart, rpart = typed_part(s, comm.rank), right_part(s, comm.rank)
    else:
        lpart = awkward_part(s, comm.rank)
        rpart = right_part(s, comm.rank).select(["k", "s", "v", "r"])
    left, right = GlobalTable(lpart, comm), GlobalTable(rpart, comm)
    out = {"left": left.local, "right": right.local}
    for name, kw in JOINS if kind == "typed" else JOINS[:1]:
        out[name] = left.join(right, engine=engine, **kw).local
    for name, kw in sorts(kind):
        out[name] = left.sort(engine=engine, **kw).local
    if kind == "typed":
        for name, by in GROUPS:
            out[name] = left.groupby(by, engine=engine).agg(AGGS).local
    for name, subset in DEDUPES if kind == "typed" else AWKWARD_DEDUPES:
        out[name] = left.drop_duplicates(subset, engine=engine).local
    out["sh_str"] = left.shuffle("s", engine=engine).local
    out["sh_int"] = left.shuffle("k", engine=engine).local
    empty = GlobalTable(left.local.slice(0, 0), comm)
    out["e_join"] = empty.join(right, on="k", how="outer", engine=engine).local
    out["e_sort"] = empty.sort("s", engine=engine).local
    out["e_dedupe"] = empty.drop_duplicates(None if kind == "typed" else AWKWARD_DEDUPES[0][1], engine=engine).local
    if kind == "typed":
        out["e_groupby"] = empty.groupby("s", engine=engine).agg(AGGS).local
    result: dict[str, object] = {k: bytes(table_to_bytes(v)) for k, v in out.items()}
    result["log"] = log.lines
    return result


def cylon_failure(which: str) -> str:
    """A pycylon failure inside the guard: "real" on every rank, or "rank1" on rank 1 only."""
    from deeprc_core.engine.cylon import _frame, cylon_env, guarded

    comm = get_communicator()
    t = pa.table({"k": pa.array(np.arange(10) + comm.rank, pa.int64()), "b": pa.array(np.arange(10) % 2 == 0)})

    def real() -> pa.Table:  # a bool column: Cylon's splitter raises "not implemented" on every rank
        env = cylon_env(comm)
        return _frame(t, env).sort_values(by=["k"], env=env).to_arrow()

    def one_rank() -> pa.Table:
        if comm.rank == 1:
            raise ValueError("boom on rank 1")
        return t

    try:
        guarded("sort", comm, real if which == "real" else one_rank)
    except Exception as exc:  # noqa: BLE001 - the test inspects every rank's error
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def zero_copy() -> dict[str, object]:
    """to_cylon / from_cylon on real pycylon objects: the Arrow buffers are shared, not copied."""
    from pycylon import CylonEnv
    from pycylon.net import MPIConfig

    comm = get_communicator()
    env = CylonEnv(config=MPIConfig(), distributed=True)
    g = GlobalTable(typed_part(3, comm.rank, rows=20).select(["k", "s", "w"]), comm)

    def addresses(t: pa.Table) -> list[int]:
        return [b.address for col in t.columns for chunk in col.chunks for b in chunk.buffers() if b is not None]

    df = g.to_cylon(env)
    back = GlobalTable.from_cylon(df, env)
    errors = []
    for bad in (lambda: GlobalTable.from_cylon([1, 2], env), lambda: g.to_cylon(_FakeEnv(comm.size + 1))):
        try:
            bad()
            errors.append("no error")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
    return {
        "mine": addresses(g.local),
        "cylon": addresses(df.to_arrow()),
        "back": addresses(back.local),
        "rows": back.local_num_rows,
        "same": back.local.equals(g.local),
        "type": type(df).__module__ + "." + type(df).__name__,
        "errors": errors,
    }


class _FakeEnv:
    """An env claiming the wrong world size (to_cylon must refuse it)."""

    def __init__(self, size: int) -> None:
        self.rank, self.world_size, self.context = 0, size, None
