"""Data preparation, metrics and models of the example pipelines, on one rank and on two."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from examples.pipelines import metrics
from examples.pipelines.camels_data import CFS_TO_MM_DAY, CamelsConfig, prepare_camels, read_streamflow_file
from examples.pipelines.ett_data import EttConfig, prepare_ett
from tests.support.ranks import run_ranks

BODIES = Path(__file__).parent / "prep_bodies.py"


def test_ett_split_and_normalisation(data_dir: Path) -> None:
    s = prepare_ett(EttConfig(data_dir=data_dir / "ett"))
    assert (s.train.num_rows, s.val.num_rows, s.test.num_rows) == (8640, 2880 + 96, 2880 + 96)
    # the test table starts 96 rows (4 days) before its first target, 2017-10-24 00:00 (row 11520)
    first = s.test.local.column("date")[0].as_py()
    assert first == dt.datetime(2017, 10, 20, 0, 0)
    mean, std = s.train.global_mean_std(["OT"])["OT"]
    assert abs(mean) < 1e-6 and abs(std - 1) < 1e-6
    assert s.features[0] == "OT" and s.target[0] == "OT"


def test_ett_calendar_features_are_scaled(data_dir: Path) -> None:
    s = prepare_ett(EttConfig(data_dir=data_dir / "ett", setting="S"))
    lo_hi = s.train.global_min_max(["hour_of_day", "day_of_week", "day_of_month", "day_of_year"])
    for lo, hi in lo_hi.values():
        assert -0.5 <= lo < hi <= 0.5


def test_camels_join_converts_and_masks(data_dir: Path) -> None:
    cfg = CamelsConfig(root=data_dir / "camels_us" / "full_record_subset", seq_len=30)
    s = prepare_camels(cfg)
    assert s.joined_rows == 3 * 12784
    assert s.missing_days == 92 + 1752 + 70
    # sorted by (basin, date) and no window may span two basins
    basins = s.train.local.column("basin").to_pylist()
    assert basins == sorted(basins)
    # the validation table starts seq_len - 1 days before 1995-01-01
    val_dates = s.val.local.column("date").to_pylist()
    assert val_dates[0] == dt.date(1995, 1, 1) - dt.timedelta(days=29)


def test_streamflow_reader(data_dir: Path) -> None:
    path = next((data_dir / "camels_us" / "full_record_subset").rglob("07290650_streamflow_qc.txt"))
    t = read_streamflow_file(path)
    assert t.num_rows == 12784 and t.column("q_cfs").null_count == 1752
    assert t.column("basin")[0].as_py() == "07290650"
    assert CFS_TO_MM_DAY == pytest.approx(0.0283168466 * 86400 * 1000)  # ft³/s -> mm/day·m²


def test_metrics() -> None:
    obs = np.array([1.0, 2.0, 3.0, np.nan])
    assert metrics.nse(obs, obs) == 1.0
    assert metrics.nse(np.full(4, 2.0), obs) == pytest.approx(0.0)
    assert metrics.nnse(0.0) == 0.5 and metrics.nnse(1.0) == 1.0
    assert metrics.mse(np.array([1.0, 1.0]), np.array([0.0, 2.0])) == 1.0
    assert metrics.mape(np.array([1.1, 0.0]), np.array([1.0, 0.0])) == pytest.approx(10.0)
    x = np.arange(12, dtype=float).reshape(2, 6)
    assert metrics.last_value_forecast(x, 3).tolist() == [[5, 5, 5], [11, 11, 11]]


@pytest.mark.torch
def test_models_shapes() -> None:
    torch = pytest.importorskip("torch")
    from examples.pipelines.forecast_models import MODEL_NAMES, build_model

    x = torch.randn(4, 96, 7)
    for name in MODEL_NAMES:
        for ci in (False, True):
            out = build_model(name, 96, 24, 7, channel_independent=ci)(x)
            assert out.shape == ((4, 24 * 7) if ci else (4, 24)), name


@pytest.mark.mpi
def test_two_rank_prep_matches_one_rank(data_dir: Path) -> None:
    one = prepare_ett(EttConfig(data_dir=data_dir / "ett")).stats
    results = run_ranks(
        BODIES,
        "ett_and_camels",
        2,
        launcher="env",
        timeout=120,
        env={"DEEPRC_COMM": "tcp", "DEEPRC_DATA": str(data_dir)},
    )
    for r in results:
        assert r.value["ett_stats"]["OT"] == pytest.approx(one["OT"])
        assert r.value["ett_rows"] == [8640, 2976, 2976]
        assert r.value["camels_joined"] == 3 * 12784
    # rebalanced: both ranks hold half of each split
    assert [r.value["ett_local"][0] for r in results] == [4320, 4320]
