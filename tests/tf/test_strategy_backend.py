"""strategy(communication='auto') takes the core's resolution of the launcher's backend, mapped to TF's options."""

from __future__ import annotations

import pytest
from deeprc_tf.strategy import _communication

from deeprc_core import WiringError

pytestmark = pytest.mark.tensorflow


@pytest.mark.parametrize(
    ("asked", "has_gpu", "want"),
    [
        (None, True, "nccl"),  # auto with GPUs: NCCL
        (None, False, "ring"),  # auto without: RING over gRPC
        ("nccl", False, "nccl"),  # kept, so strategy() fails naming the missing GPUs
        ("gloo", True, "ring"),
        ("mpi", True, "ring"),
    ],
)
def test_auto_maps_the_resolved_backend(asked: str | None, has_gpu: bool, want: str) -> None:
    assert _communication("auto", asked, has_gpu=has_gpu) == want


def test_an_explicit_choice_is_kept_and_a_bad_backend_is_named() -> None:
    assert _communication("ring", "nccl", has_gpu=True) == "ring"
    assert _communication("nccl", None, has_gpu=False) == "nccl"
    with pytest.raises(WiringError, match="backend 'ucc'"):
        _communication("auto", "ucc", has_gpu=False)
