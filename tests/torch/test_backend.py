"""DEEPRC_BACKEND (deeprc-launch --backend) chooses torch.distributed's backend; nccl without a GPU fails at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from deeprc_torch.distributed import default_backend, init_process_group

import deeprc_torch as dt
from tests.support.ranks import run_ranks

pytestmark = pytest.mark.torch

BODIES = Path(__file__).with_name("ranks_lightning.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure on a machine without GPUs")
def test_nccl_without_a_gpu_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRC_BACKEND", "nccl")
    with pytest.raises(RuntimeError, match=r"DEEPRC_BACKEND=nccl .*--backend nccl.* no CUDA GPU"):
        dt.DeepRCStrategy()  # at construction, before the Trainer starts anything
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        init_process_group()


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRC_BACKEND", "gloo")
    assert default_backend("cuda") == "gloo"  # the launcher's choice wins over the device's default
    monkeypatch.setenv("DEEPRC_BACKEND", "auto")
    assert default_backend("cuda") == "nccl" and default_backend("cpu") == "gloo"
    monkeypatch.setenv("DEEPRC_BACKEND", "mpi")
    assert default_backend() == ("mpi" if torch.distributed.is_mpi_available() else "gloo")
    monkeypatch.setenv("DEEPRC_BACKEND", "bogus")
    with pytest.raises(Exception, match="DEEPRC_BACKEND='bogus'"):
        default_backend()


@pytest.mark.slow
@pytest.mark.mpi
def test_nccl_request_fails_every_rank_of_a_lightning_job() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    results = run_ranks(BODIES, "train", 2, env={"DEEPRC_BACKEND": "nccl"}, timeout=120, expect_failure=True)
    assert all(r.returncode != 0 for r in results)
    assert all("DEEPRC_BACKEND=nccl" in r.stderr for r in results)


def test_the_process_group_timeout_is_the_cores_reading_of_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from deeprc_torch.distributed import pg_timeout

    monkeypatch.setenv("DEEPRC_COMM_TIMEOUT", "42")
    assert pg_timeout() == timedelta(seconds=42) and pg_timeout(7) == timedelta(seconds=7)
    for bad in ("soon", "-1"):
        monkeypatch.setenv("DEEPRC_COMM_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"DEEPRC_COMM_TIMEOUT='{bad}'"):
            pg_timeout()
    monkeypatch.delenv("DEEPRC_COMM_TIMEOUT")
    assert pg_timeout() == dt.DEFAULT_PG_TIMEOUT == timedelta(minutes=5)
