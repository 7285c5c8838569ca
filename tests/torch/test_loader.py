"""Single-process tests of deeprc_torch's loader: zero-copy, shapes, shuffles, windows, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from deeprc_core.views import buffer_range

import deeprc_core as dc
import deeprc_torch as dt
from examples.shipped_data import data_path

ETT = data_path("ett", "ETTh1.csv")
FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]

torch.set_num_threads(1)


def packed_table(n: int = 1000, k: int = 4) -> dc.GlobalTable:
    """n rows: a packed float32 feature column 'x' (row i holds i*k .. i*k+k-1) and target 'y' = i."""
    values = pa.array(np.arange(n * k, dtype=np.float32))
    x = pa.FixedSizeListArray.from_arrays(values, k)
    y = pa.array(np.arange(n, dtype=np.float32))
    return dc.GlobalTable(pa.table({"x": x, "y": y}), dc.LocalCommunicator())


def test_unshuffled_batches_are_views_of_the_arrow_buffer() -> None:
    table = packed_table()
    lo, size = buffer_range(table.local, "x")
    loader = dt.loader(table, "x", "y", 64, shuffle=False)
    assert len(loader) == 16
    with dc.counting_copies() as copies:
        batches = list(loader)
    assert copies.total_count == 0
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1] == 4 and y.shape == (x.shape[0],)
        assert lo <= x.data_ptr() and x.data_ptr() + x.numel() * 4 <= lo + size
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(1000, dtype=torch.float32))


def test_shuffled_batch_is_one_gather_and_epochs_differ_deterministically() -> None:
    table = packed_table()
    loader = dt.loader(table, "x", "y", 100, shuffle=True, seed=5, return_index=True)
    with dc.counting_copies() as copies:
        e0 = [idx.clone() for _, _, idx in loader]
    assert copies.count == {"gather": 20}  # x and y of 10 batches, nothing else
    assert copies.nbytes["gather"] == 1000 * 4 * 4 + 1000 * 4
    e1 = [idx.clone() for _, _, idx in loader]  # iterating again advances the epoch
    assert loader.epoch == 1
    assert sorted(torch.cat(e0).tolist()) == list(range(1000)) == sorted(torch.cat(e1).tolist())
    assert not torch.equal(torch.cat(e0), torch.cat(e1))
    loader.set_epoch(0)
    again = [idx.clone() for _, _, idx in loader]
    assert torch.equal(torch.cat(again), torch.cat(e0))


def test_resume_mid_epoch_yields_exactly_the_unseen_batches() -> None:
    table = packed_table()
    loader = dt.loader(table, "x", "y", 64, shuffle=True, seed=1, return_index=True)
    loader.set_epoch(2)
    full = [idx.clone() for _, _, idx in loader]
    loader.set_epoch(3)
    loader.set_epoch(2)
    seen = []
    for i, (_, _, idx) in enumerate(loader):
        seen.append(idx.clone())
        if i == 4:
            break
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["batch"] == 5
    fresh = dt.loader(packed_table(), "x", "y", 64, shuffle=True, seed=1, return_index=True)
    fresh.load_state_dict(state)
    rest = [idx.clone() for _, _, idx in fresh]
    assert len(rest) == len(full) - 5
    assert torch.equal(torch.cat(seen + rest), torch.cat(full))
    bad = dt.loader(packed_table(), "x", "y", 64, shuffle=True, seed=2)
    with pytest.raises(dc.DeepRCError, match="seed"):
        bad.load_state_dict(state)


def test_windows_on_ett_have_forecasting_shapes() -> None:
    table = dc.read_csv(ETT, comm=dc.LocalCommunicator())
    loader = dt.loader(table, FEATURES, "OT", 32, shuffle=False, window=(24, 6), return_index=True)
    x, y, idx = next(iter(loader))
    assert x.shape == (32, 24, 6) and y.shape == (32, 6, 1) and x.dtype == torch.float32
    ot = table.local.column("OT").to_numpy().astype(np.float32)
    start = int(idx[3])
    assert np.allclose(y[3, :, 0].numpy(), ot[start + 24 : start + 30])
    assert len(loader) == (17420 - 30 + 1) // 32 + 1


def test_bad_inputs_raise_clear_errors() -> None:
    comm = dc.LocalCommunicator()
    table = dc.read_csv(ETT, comm=comm)
    with pytest.raises(dc.SchemaError, match="nope"):
        dt.loader(table, ["HUFL", "nope"], "OT", 32)
    with pytest.raises(dc.ZeroCopyError, match="date"):
        dt.loader(table, ["HUFL", "date"], "OT", 32)
    with_null = table.with_column("HUFL", pa.array([None] + [1.0] * (table.local_num_rows - 1)))
    with pytest.raises(dc.ZeroCopyError, match="null"):
        dt.loader(with_null, FEATURES, "OT", 32)
    with pytest.raises(ValueError, match="window"):
        dt.loader(table.slice_rows(0, 10), FEATURES, "OT", 4, window=(24, 6))


def test_a_misspelt_batch_setting_names_the_accepted_ones() -> None:
    """The same check and words as deeprc-tf: both take the core's BatchSettings."""
    with pytest.raises(TypeError, match=r"deeprc_torch.loader: unknown keyword\(s\) \['shufle'\]; the batch settings"):
        dt.loader(packed_table(64), "x", "y", 16, shufle=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"DeepRCDataModule: unknown keyword\(s\) \['windows'\]"):
        dt.DeepRCDataModule(packed_table(64), "x", "y", 16, windows=(8, 2))  # type: ignore[call-arg]


def test_readonly_windows_warn_once_or_copy() -> None:
    table = packed_table(200)
    loader = dt.loader(table, "x", "y", 16, shuffle=False, window=(8, 2))
    x, y = next(iter(loader))
    assert x.shape == (16, 8, 4)
    copying = dt.loader(table, "x", "y", 16, shuffle=False, window=(8, 2), readonly="copy")
    with dc.counting_copies() as copies:
        next(iter(copying))
    assert copies.count.get("readonly") == 2


def test_memory_mapped_batches_never_alias_unwritable_memory(tmp_path: Path) -> None:
    # A write through a tensor over a read-only memory map would segfault: the default policy copies.
    path = tmp_path / "table.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, packed_table(64).local.schema) as writer:
        writer.write_table(packed_table(64).local)
    table = dc.read_ipc(path, comm=dc.LocalCommunicator())
    with dc.counting_copies() as copies:
        x, y = next(iter(dt.loader(table, "x", "y", 16, shuffle=False)))
    assert copies.count.get("readonly") == 2
    x += 1  # writable copy: no crash, and the file's table is unchanged
    assert table.local.column("x").chunk(0).flatten()[0].as_py() == 0.0


def test_drop_policy_warns_about_skipped_samples() -> None:
    table = packed_table(1000)
    with pytest.warns(UserWarning, match="skips 40 of 1000"):
        dt.loader(table, "x", "y", 64, drop_last=True)


def test_eval_window_differs_from_the_training_window() -> None:
    """Train on every 4th window, validate on all of them (the DataModule's eval_window)."""
    table = packed_table(400)
    dm = dt.DeepRCDataModule(table, "x", "y", 16, val=table, window=(10, 2, 4), eval_window=(10, 2), shuffle=False)
    dm.setup("fit")
    windows = 400 - 12 + 1
    assert dm.batches["train"].num_samples == (windows - 1) // 4 + 1
    assert dm.batches["val"].num_samples == windows
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (16, 10, 4) and y.shape == (16, 2, 1)
    assert y[1, 0, 0].item() == 11.0  # the second window starts at row 1: every window, not every 4th
    with pytest.raises(ValueError, match="eval_window= needs window="):
        dt.DeepRCDataModule(table, "x", "y", 16, eval_window=(10, 2))
