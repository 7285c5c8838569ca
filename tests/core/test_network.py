"""Choosing the address and interface toward rank 0 (single host: loopback; across nodes: tests/cluster)."""

from __future__ import annotations

import pytest

from deeprc_core import network


def test_loopback_is_recognised() -> None:
    assert network.is_loopback("127.0.1.1") and network.is_loopback("localhost") and network.is_loopback("::1")
    assert not network.is_loopback("10.1.2.3") and not network.is_loopback("node1")


def test_the_interface_toward_loopback_is_lo() -> None:
    assert network.interface_addresses()["lo"] == "127.0.0.1"
    assert network.route_source("127.0.0.1") == "127.0.0.1"
    assert network.interface_to("127.0.0.1") == "lo"
    assert network.interface_to("no-such-host.invalid") is None


def test_host_address_is_not_loopback_when_the_host_has_a_network() -> None:
    others = [a for name, a in network.interface_addresses().items() if name != "lo"]
    if not others:
        pytest.skip("this host has no interface besides loopback")
    assert not network.is_loopback(network.host_address())


def test_socket_ifname_is_set_only_across_nodes_and_never_over_the_user() -> None:
    env: dict[str, str] = {}
    assert network.apply_socket_ifname("127.0.0.1", 1, env) is None and env == {}
    assert network.apply_socket_ifname("127.0.0.1", 2, env) == "lo"
    assert env == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
    mine = {"GLOO_SOCKET_IFNAME": "ib0"}
    network.apply_socket_ifname("127.0.0.1", 2, mine)
    assert mine == {"GLOO_SOCKET_IFNAME": "ib0", "NCCL_SOCKET_IFNAME": "lo"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[127.0.0.1]"])
def test_free_port_and_its_successor_can_be_bound_on_loopback(host: str) -> None:
    """The one port probe (launcher, adapters, tests): MASTER_PORT and the TCP communicator's MASTER_PORT + 1."""
    import socket

    port = network.free_port(host)
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", port))
        b.bind(("127.0.0.1", port + 1))
