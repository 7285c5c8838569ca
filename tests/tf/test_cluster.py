"""TF_CONFIG derivation: hosts from the wiring, ports agreed through the communicator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from deeprc_core.comm.base import BaseCommunicator
from deeprc_tf.cluster import derive_tf_config, own_host, parse_tf_config

from deeprc_core import RankFailedError, WiringError, detect_wiring


class PeerComm(BaseCommunicator):
    """Rank 0 of 2; rank 1's contribution to each allgather is ``peer(mine)``."""

    kind = "fake"

    def __init__(self, peer: Callable[[Any], Any]) -> None:
        self.peer = peer

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 2

    def allgather(self, obj: Any) -> list[Any]:
        return [obj, self.peer(obj)]


ENV = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}


def _other(obj: Any) -> Any:
    return "nodeb:4444" if isinstance(obj, str) and ":" in obj else obj


def test_ports_are_agreed_per_host() -> None:
    wiring = detect_wiring({**ENV, "DEEPRC_HOSTS": "nodea,nodeb"})
    assert own_host(wiring) == "nodea"
    cfg = derive_tf_config(wiring, PeerComm(_other), environ={})
    host, port = cfg["cluster"]["worker"][0].split(":")
    assert host == "nodea" and 0 < int(port) < 65536
    assert cfg["cluster"]["worker"][1] == "nodeb:4444"
    assert cfg["task"] == {"type": "worker", "index": 0}


def test_single_node_uses_master_addr() -> None:
    wiring = detect_wiring(ENV)
    assert own_host(wiring) == "10.0.0.1"


def test_launcher_tf_config_is_kept() -> None:
    given = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    cfg = derive_tf_config(detect_wiring(ENV), PeerComm(lambda o: o), environ={"TF_CONFIG": json.dumps(given)})
    assert cfg == given


def test_contradicting_tf_config_fails_every_rank() -> None:
    bad = {"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 0}}
    with pytest.raises(WiringError, match="3 workers"):
        derive_tf_config(detect_wiring(ENV), PeerComm(lambda o: o), environ={"TF_CONFIG": json.dumps(bad)})
    # the healthy rank hears about it too
    with pytest.raises(RankFailedError):
        derive_tf_config(detect_wiring(ENV), PeerComm(lambda o: "WiringError: bad" if o is None else o), environ={})


def test_unusable_tf_config() -> None:
    with pytest.raises(WiringError, match="unusable"):
        parse_tf_config("{not json")
