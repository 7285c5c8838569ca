"""The paper's eleven NeuralForecast models fed by Deep RC (examples/pipelines/neuralforecast_models.py).

The long-format preparation on 1 and 2 ranks (each series whole on one rank, time-ordered,
the same values); every one of the eleven models built from its plan; and the pipeline at
``--quick`` size in one real local pilot: NLinear and AutoNHITS (the search) as concurrent
tasks plus NLinear on 2 ranks, every metric finite, the 2-rank model within tolerance of the
1-rank one, and the hand-over copies counted (packing and NeuralForecast's own clone, no pandas).
The test runs three of the twelve tasks: each task imports NeuralForecast (torch, Lightning,
ray.tune: about 45 CPU-seconds), so all twelve cost CI ~8 minutes on 2 cores; all eleven
train in the committed ``--quick`` and ``--paper`` runs (docs/results/neuralforecast-*).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ranks import REPO, run_ranks

BODIES = Path(__file__).parent / "nf_bodies.py"


def test_long_format_is_partitioned_by_series(data_dir: Path) -> None:
    from examples.pipelines import nf_data
    from examples.pipelines.ett_data import EttConfig

    one = nf_data.prepare(EttConfig(data_dir=data_dir / "ett"))
    assert one.series == nf_data.SERIES and one.indptr.tolist() == [k * 14400 for k in range(8)]
    assert one.temporal.shape == (7 * 14400, 2) and (one.temporal[:, 1] == 1).all()
    mean, std = one.stats["OT"]
    ot = one.y("OT")
    assert abs(ot[:8640].mean()) < 1e-5 and abs(ot[:8640].std() - 1) < 1e-5  # training months only
    assert abs(ot[8640:].mean()) > 0.05  # val/test were normalised with the training statistics
    assert mean == pytest.approx(17.1, abs=0.2) and std > 1  # °C
    results = run_ranks(BODIES, "long_format", 2, timeout=120, env={"DEEPRC_COMM": "tcp", "DEEPRC_DATA": str(data_dir)})
    got = [r.value for r in results]
    assert [g["series"] for g in got] == [["OT", "HULL", "MULL", "LULL"], ["HUFL", "MUFL", "LUFL"]]
    for g in got:
        assert g["ids_in_order"] == g["series"] and g["time_ordered"]
        assert g["indptr"] == [k * 14400 for k in range(len(g["series"]) + 1)]
        for name in g["series"]:  # the same values as on one rank: nothing lost or reordered
            assert g["first_values"][name] == pytest.approx(float(one.y(name)[0]))
            assert g["last_values"][name] == pytest.approx(float(one.y(name)[-1]))
        assert g["copies"].get("pack") == 1 and "from-pandas" not in g["copies"]


@pytest.mark.torch
def test_every_paper_model_builds_from_its_plan() -> None:
    pytest.importorskip(
        "neuralforecast", reason="neuralforecast is installed by ./dev setup (requirements/forecast.txt)"
    )
    from examples.pipelines import nf_models

    for size in nf_models.SIZES:
        for name in nf_models.PAPER_MODELS:
            p = nf_models.plan(name, size)
            model = nf_models.build(p, horizon=96, input_size=96, seed=1)
            assert type(model).__name__ == name, (size, name)
            if name != "AutoNHITS":  # the search builds its NHITS per trial
                assert model.h == 96 and model.max_steps == p.steps, (size, name)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.launcher
def test_paper_models_in_one_pilot_quick(data_dir: Path, tmp_path: Path, deeprc_home: Path) -> None:
    pytest.importorskip(
        "neuralforecast", reason="neuralforecast is installed by ./dev setup (requirements/forecast.txt)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), DEEPRC_DATA=str(data_dir), DEEPRC_COMM_TIMEOUT="300")
    cmd = [sys.executable, "-m", "examples.pipelines.neuralforecast_models", "--quick", "--out", str(tmp_path)]
    cmd += ["--models", "NLinear,AutoNHITS"]
    # its own session: on a timeout the driver, its pilot and its tasks go together (pytest-timeout would orphan them)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=780)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # the Launcher cancels its tasks and closes the pilot
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"the quick pipeline took over 13 minutes:\n{stdout[-4000:]}\n{stderr[-4000:]}")
    assert proc.returncode == 0, f"{stdout[-6000:]}\n{stderr[-6000:]}"
    rows = {r["model"]: r for r in json.loads((tmp_path / "metrics.json").read_text())}
    assert set(rows) == {"naive (last value)", "NLinear", "AutoNHITS", "NLinear, DDP 2 ranks"}
    naive = rows.pop("naive (last value)")
    assert naive["mae"] == pytest.approx(0.6099, abs=1e-3)  # the same windows as the models'
    for name, r in rows.items():
        assert all(math.isfinite(r[k]) for k in ("mae", "mse", "mape", "ot_mae")), r
        assert r["series"] == 7 and r["scored_points"] == 7 * 30 * 96, name  # every 96th test window, 7 series
    one, two = rows["NLinear"], rows["NLinear, DDP 2 ranks"]
    assert two["series_per_rank"] == [4, 3] and two["windows_per_rank"] * 2 == one["windows_per_rank"]
    assert two["mae"] == pytest.approx(one["mae"], rel=0.05) and two["mse"] == pytest.approx(one["mse"], rel=0.05)
    for r in rows.values():  # the rows went to NeuralForecast packed once and cloned once by it; no DataFrame
        # (plus the counted all-to-all that moves each series to its rank, where the preparation ran one)
        moved = {k: v for k, v in r["copies"]["count"].items() if k != "exchange"}
        assert moved == {"pack": 1, "neuralforecast": 1}, r["copies"]
    assert "search" in rows["AutoNHITS"] and rows["AutoNHITS"]["search"]["trials"] == 2
    pilot = json.loads((tmp_path / "pilot.json").read_text())
    conc = pilot["concurrent"]
    assert conc["wall_s"] > 0 and len(conc["tasks"]) == 3
    # the phase's CPU accounting: the pilot's own processes (rp.*) are a part of what the machine did
    assert 0 < conc["pilot_cpu_s"] < conc["machine_cpu_s"] <= conc["wall_s"] * (os.cpu_count() or 1) * 1.05
    assert "MAE / paper" in (tmp_path / "metrics.md").read_text()
