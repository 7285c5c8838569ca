"""Which address and network interface a rank uses to reach the other nodes.

On one host everything goes over loopback. Across nodes, gloo, NCCL and TensorFlow's
gRPC must use an interface that reaches rank 0's node; left alone, gloo binds to
whatever the host name resolves to (on many Linux installs 127.0.1.1) and NCCL to its
own guess. The rule here: **the interface that holds the source address the kernel
picks for a route to MASTER_ADDR**. Finding it sends no packet (a UDP ``connect`` only
asks the routing table).

:func:`apply_socket_ifname` sets ``GLOO_SOCKET_IFNAME`` and ``NCCL_SOCKET_IFNAME`` from
that rule in multi-node jobs unless the user has set them. :func:`free_port` is the one port
probe of the launcher, both adapters and the tests.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import MutableMapping

#: The variables :func:`apply_socket_ifname` fills in (the user's own values always win).
IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")

_SIOCGIFADDR = 0x8915  # Linux ioctl: the IPv4 address of an interface


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for an address that means "every interface" (``0.0.0.0``, ``::``, ``*``, empty), never a host."""
    h = host.strip().strip("[]")
    if h in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(h).is_unspecified
    except ValueError:
        return False


def free_port(host: str = "") -> int:
    """A TCP port free on this host now, whose successor is free too.

    The successor matters where the port becomes MASTER_PORT: the core's TCP communicator listens
    on MASTER_PORT + 1. A loopback ``host`` is probed there only (ranks on one machine); any other
    host, or none, on every interface (a port free there is free on each one). The port is
    released on return, so another process may still take it first: callers that bind it retry
    or fail with their own message.
    """
    bind_to = host.strip().strip("[]") if is_loopback(host.strip().strip("[]")) else ""
    family = socket.AF_INET6 if ":" in bind_to else socket.AF_INET
    for _ in range(200):
        with socket.socket(family) as s:
            s.bind((bind_to, 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket(family) as s2:
            try:
                s2.bind((bind_to, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free pair of TCP ports on {host or 'this host'} after 200 tries")


def resolve_ipv4(host: str) -> str | None:
    """``host``'s first IPv4 address, or None when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


def route_source(dest: str) -> str | None:
    """The local address the kernel would send from to reach ``dest`` (no packet is sent)."""
    addr = resolve_ipv4(dest)
    if addr is None:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((addr, 9))  # UDP connect: a routing-table lookup only
        except OSError:
            return None
        return str(s.getsockname()[0])


def interface_addresses() -> dict[str, str]:
    """``{interface name: IPv4 address}`` for every interface that has one (Linux)."""
    found: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            found[name] = socket.inet_ntoa(packed[20:24])
    return found


def interface_of(addr: str) -> str | None:
    """The name of the interface that holds ``addr``, or None."""
    for name, have in interface_addresses().items():
        if have == addr:
            return name
    return None


def interface_to(master_addr: str) -> str | None:
    """The interface that holds the address this host uses to reach ``master_addr``."""
    src = route_source(master_addr)
    return interface_of(src) if src else None


def host_address() -> str:
    """This host's address for other nodes: its name's IPv4 address unless that is loopback,
    else the first non-loopback interface address, else the host name itself."""
    name = socket.gethostname()
    addr = resolve_ipv4(name)
    if addr and not is_loopback(addr):
        return addr
    for ifname, have in sorted(interface_addresses().items()):
        if not is_loopback(have) and ifname != "lo":
            return have
    return name


def address_toward(master_addr: str | None) -> str:
    """The address other ranks reach this host at: the source address toward rank 0's host when
    known (the interface the job uses), otherwise :func:`host_address`."""
    if master_addr and not is_loopback(master_addr):
        src = route_source(master_addr)
        if src and not is_loopback(src):
            return src
    return host_address()


def apply_socket_ifname(
    master_addr: str | None, num_nodes: int, environ: MutableMapping[str, str] | None = None
) -> str | None:
    """Set GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to the interface toward ``master_addr``.

    Only in multi-node jobs and only for variables the user has not set; returns the
    interface chosen (None when nothing was set).
    """
    env = os.environ if environ is None else environ
    # A wildcard MASTER_ADDR names no host, so no route (it would pick loopback): leave it to the user.
    if num_nodes <= 1 or not master_addr or is_wildcard(master_addr) or all(env.get(v) for v in IFNAME_VARS):
        return None
    ifname = interface_to(master_addr)
    if ifname is None:
        return None
    for var in IFNAME_VARS:
        if not env.get(var):
            env[var] = ifname
    return ifname
