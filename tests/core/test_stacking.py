"""Batches stacked from separate columns: the compiled kernel agrees with numpy, refuses bad rows, and is chosen as asked."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from deeprc_core.stacking import stack_columns
from deeprc_core.views import sliding_windows

import deeprc_core as d
from deeprc_core import stacking

needs_kernel = pytest.mark.skipif(
    stacking._kernel is None and os.environ.get("DEEPRC_STACK_KERNEL") != "compiled",
    reason="deeprc_core._stack is not built here (./dev test requires it: DEEPRC_STACK_KERNEL=compiled)",
)


def _columns(n: int, f: int, dtype: str, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random(n) * 100).astype(dtype) for _ in range(f)]


def _both(columns: list[np.ndarray], rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same batch from the kernel and from the numpy fallback."""
    first = columns[0]
    n = len(range(*rows.indices(len(first)))) if isinstance(rows, slice) else len(rows)
    shape = (n, *first.shape[1:], len(columns))
    compiled, fallback = np.empty(shape, first.dtype), np.empty(shape, first.dtype)
    assert stacking._kernel is not None
    stacking._kernel(compiled, columns, rows.start if isinstance(rows, slice) else rows.astype(np.int64))
    stacking._fill_numpy(fallback, columns, rows)
    return compiled, fallback


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int16", "uint32", "int64"])
@pytest.mark.parametrize("f", [1, 3, 6, 16])
def test_kernel_equals_numpy_for_slices_and_indexes(dtype: str, f: int) -> None:
    cols = _columns(1000, f, dtype)
    reference = np.stack(cols, axis=1)
    for rows in (slice(0, 1000), slice(7, 300), slice(999, 1000)):
        compiled, fallback = _both(cols, rows)
        assert (compiled == fallback).all() and (compiled == reference[rows]).all()
    index = np.random.default_rng(1).integers(0, 1000, 333)  # repeats and any order
    compiled, fallback = _both(cols, index)
    assert (compiled == fallback).all() and (compiled == reference[index]).all()


@needs_kernel
def test_kernel_stacks_windows_and_sliced_columns() -> None:
    base = _columns(500, 4, "float32")
    windows = [sliding_windows(c[3:], 12, 5) for c in base]  # (samples, 12), read-only, strided samples
    for rows in (slice(2, 40), np.array([0, 17, 5, 5, len(windows[0]) - 1])):
        compiled, fallback = _both(windows, rows)
        assert compiled.shape[1:] == (12, 4) and (compiled == fallback).all()
    offset = [c[11:] for c in base]  # views that do not start at their buffer
    compiled, fallback = _both(offset, slice(0, 100))
    assert (compiled == fallback).all() and (compiled[0] == [c[11] for c in base]).all()


@needs_kernel
def test_kernel_refuses_rows_outside_the_columns_before_writing() -> None:
    cols = _columns(100, 3, "float32")
    out = np.full((2, 3), -1.0, np.float32)
    for bad in (np.array([5, 100]), np.array([-1, 0])):
        with pytest.raises(IndexError, match="outside the 100 samples"):
            stacking._kernel(out, cols, bad)
    with pytest.raises(IndexError, match="rows 99..100"):
        stacking._kernel(out, cols, 99)
    assert (out == -1).all()
    with pytest.raises(ValueError, match="column 1 differs"):
        stacking._kernel(out, [cols[0], cols[1].astype(np.float64), cols[2]], 0)
    with pytest.raises(TypeError, match="int64"):
        stacking._kernel(out, cols, np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="2 rows for a batch of 3"):
        stacking._kernel(np.empty((3, 3), np.float32), cols, np.array([1, 2]))


def test_stack_columns_falls_back_to_numpy_where_the_kernel_cannot_go() -> None:
    cols = _columns(50, 3, "float32")
    mixed = [cols[0], cols[1].astype(np.float64), cols[2]]  # cast into the first column's dtype
    assert (stack_columns(mixed, slice(0, 10)) == np.stack(cols, axis=1)[:10]).all()
    stepped = stack_columns(cols, slice(0, 10, 2))
    assert (stepped == np.stack(cols, axis=1)[0:10:2]).all()
    empty = stack_columns(cols, np.array([], dtype=np.int64))
    assert empty.shape == (0, 3)


def test_stack_columns_is_one_counted_copy_of_the_batch_aligned_when_asked() -> None:
    cols = _columns(200, 5, "float32")
    with d.counting_copies() as copies:
        x = stack_columns(cols, np.array([3, 1, 2]), alignment=64, reason="gather")
    assert copies.count == {"gather": 1} and copies.nbytes["gather"] == 3 * 5 * 4
    assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous


def test_batches_of_separate_columns_are_the_same_with_either_implementation() -> None:
    """TableBatches over separate columns: one batch plan, identical bytes from the kernel and from numpy."""
    code = (
        "import numpy as np, pyarrow as pa, deeprc_core as d\n"
        "from deeprc_core import stacking\n"
        "n = 3000\n"
        "t = d.GlobalTable(pa.table({f'f{j}': np.arange(n, dtype=np.float32) * (j + 1) for j in range(5)} | "
        "{'y': np.arange(n, dtype=np.float32)}))\n"
        "out = []\n"
        "for shuffle in (False, True):\n"
        "    tb = d.TableBatches(t, [f'f{j}' for j in range(5)], 'y', 128, shuffle=shuffle, seed=3)\n"
        "    out += [b.x.tobytes().hex() for b in tb.epoch(1)]\n"
        "tw = d.TableBatches(t, ['f0', 'f3'], 'y', 64, window=(10, 2, 3))\n"
        "out += [b.x.tobytes().hex() for b in tw.epoch(0)]\n"
        "print(stacking.STACK_KERNEL, len(out), hash(tuple(out)))\n"
    )
    results = {}
    for choice in ("numpy", "auto"):
        env = {**os.environ, "DEEPRC_STACK_KERNEL": choice, "PYTHONHASHSEED": "0"}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        results[choice] = res.stdout.split()
    assert results["numpy"][0] == "numpy"
    assert results["numpy"][1:] == results["auto"][1:]


def test_the_implementation_is_chosen_by_deeprc_stack_kernel() -> None:
    def run(value: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DEEPRC_STACK_KERNEL": value}
        return subprocess.run(
            [sys.executable, "-c", "from deeprc_core import stacking; print(stacking.STACK_KERNEL)"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("numpy").stdout.strip() == "numpy"
    bad = run("fast")
    assert bad.returncode != 0 and "DEEPRC_STACK_KERNEL='fast': use one of auto, compiled, numpy" in bad.stderr
    if stacking._kernel is not None:
        assert run("compiled").stdout.strip() == "compiled"


def test_a_pyarrow_column_view_goes_through_the_kernel_unchanged() -> None:
    """Column views of an Arrow table (read-only numpy over Arrow buffers) are what batches stack."""
    t = pa.table({"a": np.arange(10, dtype=np.float32), "b": np.arange(10, dtype=np.float32) * 2})
    views = [d.column_view(t, "a"), d.column_view(t, "b")]
    x = stack_columns(views, np.array([9, 0]))
    assert x.tolist() == [[9.0, 18.0], [0.0, 0.0]]


def _threads() -> int:
    """The process's stacking threads (the kernel names them); other libraries' pools come and go."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # the thread ended while we listed
            continue
    return names.count("deeprc-stack")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"target": ["y", "y2"]},  # a packed (n, 2) target: gathered by the worker too
        {"window": d.Window(input_len=6, horizon=2, stride=3)},  # windows of y: gathered in the consumer
        {"even": "pad", "nan_targets": True},
    ],
    ids=["scalar-target", "two-targets", "window", "dropna"],
)
def test_stacking_ahead_in_the_kernels_thread_gives_the_same_batches(options: dict[str, object]) -> None:
    n = 5000
    cols = {f"f{j}": np.arange(n, dtype=np.float32) * (j + 1) for j in range(4)}
    y = np.arange(n, dtype=np.float32)
    if options.pop("nan_targets", False):
        y[::7] = np.nan  # dropna_target: the samples are an index of the valid rows
    t = d.GlobalTable(pa.table({**cols, "y": y, "y2": -np.arange(n, dtype=np.float32)}))
    target = options.pop("target", "y")
    for shuffle in (False, True):
        runs = []
        for ahead in (0, 1, 3):
            tb = d.TableBatches(t, list(cols), target, 100, shuffle=shuffle, seed=5, stack_ahead=ahead, **options)
            runs.append([(b.number, b.x.tobytes(), b.y.tobytes(), b.index.tobytes()) for b in tb.epoch(2)])
        assert runs[0] == runs[1] == runs[2] and len(runs[0]) >= 10
        first = runs[0][0]
        if "window" not in options:
            assert np.frombuffer(first[1], np.float32).reshape(-1, 4)[:, 2].tolist() == [
                3 * i for i in np.frombuffer(first[3], np.int64)
            ]


@needs_kernel
def test_the_worker_stacks_queued_batches_in_order_without_holding_the_gil() -> None:
    assert stacking.NATIVE is not None
    cols = _columns(20_000, 16, "float32")
    reference = np.stack(cols, axis=1)
    handle = stacking.NATIVE.Columns(cols)
    assert handle.num_samples == 20_000
    worker = stacking.NATIVE.Worker(8)
    rng = np.random.default_rng(3)
    jobs = []
    for k in range(8):
        rows: int | np.ndarray = 1000 * k if k % 2 else rng.integers(0, 20_000, 1000)
        out = np.empty((1000, 16), np.float32)
        jobs.append((worker.submit(out, handle, rows), out, rows))
    with pytest.raises(RuntimeError, match="8 jobs are not waited for"):
        worker.submit(np.empty((1, 16), np.float32), handle, 0)
    worker.wait(jobs[-1][0])  # waits for every earlier one too
    for ticket, out, rows in jobs:
        worker.wait(ticket)  # done already: returns at once
        want = reference[rows : rows + 1000] if isinstance(rows, int) else reference[rows]
        assert (out == want).all()
    # a bad job is refused at submit, before it is queued; the worker goes on
    with pytest.raises(IndexError, match="outside the 20000 samples"):
        worker.submit(np.empty((2, 16), np.float32), handle, np.array([0, 20_000]))
    with pytest.raises(ValueError, match="never submitted"):
        worker.wait(10**6)
    out = np.empty((3, 16), np.float32)
    worker.wait(worker.submit(out, cols, 5))  # a plain sequence of columns is parsed at submit
    assert (out == reference[5:8]).all()
    worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(out, handle, 0)


@needs_kernel
def test_the_worker_holds_its_buffers_and_stops_with_the_epoch() -> None:
    import gc

    assert stacking.NATIVE is not None
    cols = _columns(1000, 3, "float64")
    worker = stacking.NATIVE.Worker(2)
    out = np.empty((10, 3))
    view = out[:]
    want = np.stack(cols, axis=1)[990:]
    ticket = worker.submit(view, cols, 990)
    del view, cols  # the worker's buffer references keep both alive until the job is waited for
    gc.collect()
    worker.wait(ticket)
    assert (out == want).all()
    from deeprc_core.stacked_groups import STACK_THREADS

    before = _threads()
    n = 20_000
    cols2 = {f"f{j}": np.arange(n, dtype=np.float32) for j in range(16)}
    table = d.GlobalTable(pa.table({**cols2, "y": np.zeros(n, np.float32)}))
    for shuffle, threads in ((False, 1), (True, STACK_THREADS)):  # gathers wait on memory: more threads
        it = d.TableBatches(table, list(cols2), "y", 64, shuffle=shuffle).epoch(0)
        next(it)
        assert _threads() == before + threads  # the epoch's stacking threads
        it.close()  # a break in the training loop, or limit_train_batches
        assert _threads() == before


@needs_kernel
def test_a_worker_used_after_fork_fails_at_once_instead_of_hanging() -> None:
    assert stacking.NATIVE is not None
    worker = stacking.NATIVE.Worker(2)
    cols = _columns(100, 2, "float32")
    pid = os.fork()
    if pid == 0:  # the child: the worker's thread did not come with it
        code = 3
        try:
            worker.submit(np.empty((1, 2), np.float32), cols, 0)
        except RuntimeError as exc:
            code = 0 if "forked" in str(exc) else 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    worker.close()


def test_stack_ahead_is_a_checked_batch_setting() -> None:
    from deeprc_core.batch_settings import BatchSettings

    assert BatchSettings.from_options("x", {"stack_ahead": 0}).stack_ahead == 0
    with pytest.raises(ValueError, match="stack_ahead=-1"):
        BatchSettings.from_options("deeprc_torch.loader", {"stack_ahead": -1})
