"""A simulated SLURM cluster on one Linux host: nodes are network namespaces on a private bridge.

:class:`Cluster` stands up a head node (slurmctld, the "login node") and N compute
nodes (one slurmd each) on a private /24 that it picks, with munged in the root
namespace, Open MPI wired to start its daemons on the other nodes through
``nsenter`` (an rsh agent script), and a node-local ``/etc/hosts`` per node (a bind
mount inside the node's own mount namespace; the real ``/etc/hosts`` is never
touched). Every wait is bounded. :meth:`Cluster.down` kills every process it started
and every process still inside one of its namespaces (by PID), then deletes the
namespaces, the bridge and its folder, and runs even when ``up`` failed half-way.

Traffic goes only between the namespaces created here: the bridge itself has no
address, so nothing in the root namespace is reachable from the nodes and vice versa.

Needs root, ``ip``, ``unshare``, ``nsenter``, munge, slurm-wlm and Open MPI;
:func:`unavailable_reason` says in one line what is missing.

    with Cluster(nodes=2) as c:
        c.run("node1", ["srun", "-N2", "hostname"])
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: What every name this harness creates starts with (namespaces, bridge, folder), so leftovers can be found.
PREFIX = "drc"
TOOLS = ("ip", "unshare", "nsenter", "munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo", "mpirun")
#: Cores and memory each simulated node declares to SLURM (the host's cores are shared by all nodes).
NODE_CPUS = 4
NODE_MEMORY_MB = 4000


def unavailable_reason() -> str | None:
    """Why no simulated cluster can be built here (one line), or None when it can."""
    if sys.platform != "linux":
        return "the simulated cluster needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the simulated cluster needs root (network namespaces, slurmd)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"the simulated cluster needs {', '.join(missing)} (./dev installs slurm-wlm, munge and openmpi-bin)"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class ClusterError(RuntimeError):
    """The simulated cluster could not be built or a bounded wait ran out."""


@dataclass
class Node:
    """One simulated host: a network namespace, its veth, its address and the holder process."""

    name: str
    netns: str
    addr: str
    veth: str
    holder: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the holder, whose namespaces (net, UTS, mount) every command on the node enters."""
        if self.holder is None:
            raise ClusterError(f"{self.name} is not up")
        return self.holder.pid


def _sh(*cmd: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _sh("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        for word in line.split():
            if "/" in word and word[0].isdigit():
                nets.append(ipaddress.ip_interface(word).network)
    for line in _sh("ip", "-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word[:1].isdigit():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    return nets


def pick_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A private /24 in 10.0.0.0/8 that overlaps no address or route of this host."""
    rng = rng or random.Random()
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(100, 250)}.{rng.randrange(0, 256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise ClusterError("no free private /24 in 10.100-249.x.0 (every candidate overlaps an address or route here)")


@dataclass
class Cluster:
    """A head node plus ``nodes`` compute nodes running SLURM, munge and Open MPI (see the module doc)."""

    nodes: int = 2
    cpus: int = NODE_CPUS
    #: seconds the controller waits before it declares a silent slurmd dead (the node-loss fault test)
    slurmd_timeout: int = 10
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"{PREFIX}-cluster-")))
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000:05d}{random.randrange(100):02d}")

    def __post_init__(self) -> None:
        self.subnet: ipaddress.IPv4Network | None = None
        self.head: Node | None = None
        self.compute: list[Node] = []
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.bridge = f"{PREFIX}br{self.tag}"[:15]

    # -- names and paths -------------------------------------------------------------------------
    @property
    def all_nodes(self) -> list[Node]:
        """The head node first, then node1..nodeN."""
        return ([self.head] if self.head else []) + self.compute

    def node(self, name: str) -> Node:
        """The node called ``name`` (``head``, ``node1``, ...)."""
        for n in self.all_nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r}; the cluster has {[n.name for n in self.all_nodes]}")

    @property
    def conf(self) -> Path:
        """The slurm.conf every daemon and client uses (through SLURM_CONF)."""
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        """munged's socket (in the harness folder, not /run/munge)."""
        return self.root / "munge" / "munge.sock"

    @property
    def rsh_agent(self) -> Path:
        """The script Open MPI uses instead of ssh to start its daemon on another node."""
        return self.root / "bin" / "rsh-agent"

    def env(self) -> dict[str, str]:
        """Variables every command on the cluster needs: SLURM_CONF and Open MPI's agent and subnet."""
        assert self.subnet is not None
        return {
            "SLURM_CONF": str(self.conf),
            "OMPI_MCA_plm_rsh_agent": str(self.rsh_agent),
            "OMPI_MCA_btl": "self,vader,tcp",
            "OMPI_MCA_btl_tcp_if_include": str(self.subnet),
            "OMPI_MCA_oob_tcp_if_include": str(self.subnet),
            "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1",
            "PMIX_MCA_gds": "hash",
        }

    # -- running things on nodes ------------------------------------------------------------------
    def wrap(self, node: str, cmd: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> list[str]:
        """``cmd`` as a command line that runs inside ``node`` (its net, UTS and mount namespaces)."""
        wd = os.fspath(cwd or os.getcwd())
        return ["nsenter", "-t", str(self.node(node).pid), "-n", "-u", "-m", f"--wd={wd}", "--", *cmd]

    def popen(
        self,
        node: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        **kwargs: object,
    ) -> subprocess.Popen[str]:
        """Start ``cmd`` on ``node`` in its own process group, with the cluster's variables.

        ``env`` is the whole environment (the cluster's variables are added to it); None means ``os.environ``.
        """
        full = {**self.env(), **env} if env is not None else {**os.environ, **self.env()}
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            self.wrap(node, cmd, cwd), env=full, text=True, start_new_session=True, **kwargs
        )

    def run(
        self,
        node: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        cwd: str | os.PathLike[str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on ``node`` and return its output; the whole process group dies at ``timeout``."""
        proc = self.popen(node, cmd, env, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise ClusterError(
                f"{' '.join(cmd)} on {node} did not finish within {timeout:g}s\n"
                f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
            ) from None
        done = subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
        if check and done.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} on {node} failed ({done.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
        return done

    def pids_on(self, node: str) -> list[int]:
        """Every process inside ``node``'s network namespace (the holder included)."""
        return netns_pids(self.node(node).netns)

    # -- up ---------------------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> Cluster:
        """Build everything and wait (at most ``timeout`` s) until every node is idle in SLURM."""
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        try:
            self._network()
            self._files()
            self._munge()
            self._slurm(timeout)
        except BaseException:
            self.down()
            raise
        (self.root / "cluster.json").write_text(json.dumps(self.describe(), indent=1))
        return self

    def describe(self) -> dict[str, object]:
        """What ``./dev cluster status`` prints and what other tools read: folder, subnet, nodes."""
        return {
            "root": str(self.root),
            "subnet": str(self.subnet),
            "bridge": self.bridge,
            "slurm_conf": str(self.conf),
            "env": self.env() if self.subnet else {},
            "nodes": {n.name: {"addr": n.addr, "pid": n.pid, "netns": n.netns} for n in self.all_nodes},
            "daemons": [p.pid for p in self.daemons],
        }

    def _network(self) -> None:
        self.subnet = pick_subnet()
        hosts = list(self.subnet.hosts())
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "link", "set", self.bridge, "up")
        names = ["head"] + [f"node{i}" for i in range(1, self.nodes + 1)]
        for i, name in enumerate(names):
            addr = str(hosts[100 if name == "head" else i - 1])
            node = Node(name, f"{PREFIX}{self.tag}-{name}", addr, f"{PREFIX}{self.tag}{i}"[:15])
            if name == "head":
                self.head = node
            else:
                self.compute.append(node)
            _sh("ip", "netns", "add", node.netns)
            _sh("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            _sh("ip", "link", "set", node.veth, "master", self.bridge, "up")
            ns = ("ip", "-n", node.netns)
            _sh(*ns, "addr", "add", f"{addr}/{self.subnet.prefixlen}", "dev", "eth0")
            _sh(*ns, "link", "set", "eth0", "up")
            _sh(*ns, "link", "set", "lo", "up")

    def _files(self) -> None:
        r = self.root
        for sub in ("etc", "munge", "bin", "ctld/state", "hosts"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{n.addr} {n.name}" for n in self.all_nodes)]
        for n in self.all_nodes:
            for sub in ("spool", "tmp"):
                (r / n.name / sub).mkdir(parents=True, exist_ok=True)
            # A node-local hosts file: the node's own name never resolves to a loopback address.
            (r / "hosts" / n.name).write_text("\n".join(lines) + "\n")
            n.holder = subprocess.Popen(
                [
                    "unshare",
                    "--uts",
                    "--mount",
                    "--propagation",
                    "private",
                    "nsenter",
                    f"--net=/run/netns/{n.netns}",
                    "sh",
                    "-c",
                    f"hostname {n.name} && mount --bind {shlex.quote(str(r / 'hosts' / n.name))} /etc/hosts "
                    "&& exec sleep infinity",
                ],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        for n in self.all_nodes:
            self._wait(
                lambda n=n: _sh("nsenter", "-t", str(n.pid), "-u", "hostname", check=False).stdout.strip() == n.name,
                10.0,
                f"{n.name}'s holder process to set its hostname",
            )
        pids = {n.name: n.pid for n in self.all_nodes}
        cases = "\n".join(f"  {name}) pid={pid} ;;" for name, pid in pids.items())
        # Open MPI calls `agent [options] host command...` as it would call ssh; run it inside that node.
        self.rsh_agent.write_text(
            "#!/bin/sh\n"
            "# rsh/ssh stand-in for the simulated cluster: run the command inside the named node.\n"
            'while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done\n'
            'host=$1; shift\ncase "$host" in\n'
            f"{cases}\n"
            '  *) echo "rsh-agent: unknown node $host" >&2; exit 255 ;;\nesac\n'
            'exec nsenter -t "$pid" -n -u -m --wd="$PWD" -- /bin/sh -c "$*"\n'
        )
        self.rsh_agent.chmod(0o755)
        self.conf.write_text(self._slurm_conf())

    def _slurm_conf(self) -> str:
        assert self.head is not None
        r = self.root
        nodes = "\n".join(
            f"NodeName={n.name} NodeAddr={n.addr} CPUs={self.cpus} RealMemory={NODE_MEMORY_MB} State=UNKNOWN"
            for n in self.compute
        )
        return f"""\
# The simulated cluster's slurm.conf (written by tests/support/cluster.py)
ClusterName=deeprc
SlurmctldHost=head({self.head.addr})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# the nodes declare more cores than the host has: take the declared counts as they are
SlurmdParameters=config_overrides
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation={r}/ctld/state
SlurmctldPidFile={r}/ctld/slurmctld.pid
SlurmctldLogFile={r}/ctld/slurmctld.log
SlurmdSpoolDir={r}/%n/spool
SlurmdPidFile={r}/%n/slurmd.pid
SlurmdLogFile={r}/%n/slurmd.log
TmpFS={r}/%n/tmp
ReturnToService=2
SlurmdTimeout={self.slurmd_timeout}
SlurmctldTimeout=10
InactiveLimit=0
KillWait=2
MinJobAge=30
MessageTimeout=5
{nodes}
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def _munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        m = self.root / "munge"
        proc = subprocess.Popen(
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.daemons.append(proc)
        self._wait(lambda: self.munge_socket.exists() or proc.poll() is not None, 10.0, "munged's socket")
        if proc.poll() is not None:
            raise ClusterError(f"munged exited ({proc.returncode}): {_tail(m / 'munged.log')}")

    def _daemon(self, node: str, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env()}
        proc = subprocess.Popen(
            self.wrap(node, cmd, self.root),
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        self.daemons.append(proc)
        return proc

    def _slurm(self, timeout: float) -> None:
        conf = str(self.conf)
        ctld = self._daemon("head", ["slurmctld", "-D", "-i", "-f", conf], self.root / "ctld" / "stderr")
        self.slurmds = {
            n.name: self._daemon(n.name, ["slurmd", "-D", "-N", n.name, "-f", conf], self.root / n.name / "stderr")
            for n in self.compute
        }

        def idle() -> bool:
            for p, where in [(ctld, "ctld"), *((p, name) for name, p in self.slurmds.items())]:
                if p.poll() is not None:
                    raise ClusterError(
                        f"{where} daemon exited ({p.returncode}): {_tail(self.root / where / 'stderr')}"
                        f"{_tail(self.root / where / ('slurmctld.log' if where == 'ctld' else 'slurmd.log'))}"
                    )
            done = self.run("head", ["sinfo", "-h", "-N", "-o", "%N %T"], timeout=10)
            states = dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)
            return len(states) == self.nodes and all(s == "idle" for s in states.values())

        try:
            self._wait(idle, timeout, "every node idle in sinfo")
        except ClusterError as exc:
            logs = "".join(_tail(self.root / n.name / "slurmd.log", 800) for n in self.compute)
            raise ClusterError(f"{exc}{_tail(self.root / 'ctld' / 'slurmctld.log', 1500)}{logs}") from None

    def resource_config(self, python: str = sys.executable) -> dict[str, object]:
        """The RADICAL-Pilot resource config of this cluster (``deeprc-launch --resource-config``).

        The worked example of docs/clusters.md: SLURM as resource manager, the pilot
        submitted with sbatch (psij's slurm executor) from the head node, SRUN for tasks.
        """
        assert self.subnet is not None
        env = self.env()
        exports = [f"export {k}={v}" for k, v in env.items()]
        venv = (
            str(Path(python).resolve().parent.parent) if "VIRTUAL_ENV" not in os.environ else os.environ["VIRTUAL_ENV"]
        )
        return {
            "cluster": {
                "description": "The simulated cluster of tests/support/cluster.py (head + nodes in namespaces).",
                "default_schema": "local",
                "schemas": {
                    "local": {"job_manager_endpoint": "slurm://localhost/", "filesystem_endpoint": "file://localhost/"}
                },
                "default_queue": "batch",
                "resource_manager": "SLURM",
                "agent_config": "default",
                "agent_scheduler": "CONTINUOUS",
                "agent_spawner": "POPEN",
                "launch_methods": {"order": ["SRUN"], "SRUN": {}},
                "pre_bootstrap_0": [*exports, f"export PATH={venv}/bin:$PATH", "export SLURM_MPI_TYPE=pmix"],
                "default_remote_workdir": str(self.root / "sandbox"),
                "virtenv_mode": "local",
                "virtenv": venv,
                "rp_version": "installed",
                "python_dist": "default",
                "cores_per_node": self.cpus,
                "gpus_per_node": 0,
                "system_architecture": {"exclusive": False},
            }
        }

    def restart_slurmd(self, node: str, timeout: float = 60.0) -> None:
        """Start ``node``'s slurmd again (after a fault test killed it) and wait until it is idle."""
        conf = str(self.conf)
        self.slurmds[node] = self._daemon(node, ["slurmd", "-D", "-N", node, "-f", conf], self.root / node / "stderr")
        self.run("head", ["scontrol", "update", f"NodeName={node}", "State=RESUME"], timeout=10)

        def idle() -> bool:
            out = self.run("head", ["sinfo", "-h", "-n", node, "-o", "%T"], timeout=10).stdout.strip()
            return out == "idle"

        self._wait(idle, timeout, f"{node} idle again")

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout:g}s waiting for {what}")

    # -- down -------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Kill every process of the cluster, delete namespaces, bridge and folder; return what failed."""
        procs = [*self.daemons, *(n.holder for n in self.all_nodes if n.holder is not None)]
        problems = teardown([n.netns for n in self.all_nodes], self.bridge, self.root, [p.pid for p in procs])
        for p in procs:  # reap our children
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append(f"pid {p.pid} did not exit")
        self.head, self.compute, self.daemons = None, [], []
        return problems

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def netns_pids(netns: str) -> list[int]:
    """Every process inside the network namespace ``netns``."""
    done = _sh("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def teardown(netns: Sequence[str], bridge: str, root: Path, pids: Sequence[int]) -> list[str]:
    """Kill ``pids`` and everything inside ``netns``, then delete the namespaces, ``bridge`` and ``root``.

    Returns what could not be cleaned (empty when everything went).
    """
    problems: list[str] = []
    for ns in netns:
        for pid in netns_pids(ns):
            _kill(pid)
    for pid in pids:
        if _cmdline_mentions(pid, str(root)):  # never a recycled PID of someone else's process
            _kill_pgid(pid)
    for ns in netns:
        deadline = time.monotonic() + 10
        while netns_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = netns_pids(ns)
        if left:
            problems.append(f"{ns}: processes {left} survived SIGKILL")
        done = _sh("ip", "netns", "del", ns, check=False)
        if done.returncode != 0 and "No such file" not in done.stderr:
            problems.append(f"ip netns del {ns}: {done.stderr.strip()}")
    done = _sh("ip", "link", "del", bridge, check=False)
    if done.returncode != 0 and "Cannot find" not in done.stderr:
        problems.append(f"ip link del {bridge}: {done.stderr.strip()}")
    shutil.rmtree(root, ignore_errors=True)
    return problems


def _cmdline_mentions(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def _kill_pgid(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # each daemon and holder leads its own process group
    except (ProcessLookupError, PermissionError):
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            _kill(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return "\n" + path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def leftovers(tag: str | None = None) -> list[str]:
    """Namespaces, bridges, folders and daemons of simulated clusters still present (all when ``tag`` is None)."""
    mark = f"{PREFIX}{tag}" if tag else PREFIX
    found = [
        f"netns {line.split()[0]}" for line in _sh("ip", "netns", "list").stdout.splitlines() if line.startswith(mark)
    ]
    for line in _sh("ip", "-o", "link", "show", "type", "bridge").stdout.splitlines():
        name = line.split(":")[1].strip()
        if name.startswith(f"{PREFIX}br{tag or ''}"):
            found.append(f"bridge {name}")
    return found


#: Where ``./dev cluster up`` records the cluster it started, for ``status`` and ``down``.
STATE_FILE = Path(tempfile.gettempdir()) / f"{PREFIX}-dev-cluster.json"


def main(argv: Sequence[str]) -> int:
    """``./dev cluster up [N]|down|status|run NODE CMD...``: a simulated cluster for people."""
    what = argv[0] if argv else "status"
    state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else None
    if what == "up":
        if state:
            print(f"a cluster is already up (see {STATE_FILE}); ./dev cluster down first")
            return 1
        reason = unavailable_reason()
        if reason:
            print(f"cannot start the simulated cluster: {reason}")
            return 1
        c = Cluster(nodes=int(argv[1]) if len(argv) > 1 else 2).up()
        desc = c.describe()
        STATE_FILE.write_text(json.dumps(desc, indent=1))
        print(f"simulated cluster up: subnet {desc['subnet']}, folder {desc['root']}")
        for name, n in desc["nodes"].items():  # type: ignore[attr-defined]
            print(f"  {name:6s} {n['addr']:15s} holder pid {n['pid']}")
        print("run on a node:  ./dev cluster run node1 srun -N2 hostname   (the head node is the login node)")
        print("tear down:      ./dev cluster down")
        return 0
    if state is None:
        print("no simulated cluster is up (./dev cluster up starts one)")
        return 0 if what in ("status", "down") else 1
    if what == "status":
        print(json.dumps(state, indent=1))
        return 0
    if what == "down":
        nodes = state["nodes"].values()
        problems = teardown(
            [n["netns"] for n in nodes],
            state["bridge"],
            Path(state["root"]),
            [*state["daemons"], *(n["pid"] for n in nodes)],
        )
        STATE_FILE.unlink()
        print("\n".join(problems) or "simulated cluster down: processes, namespaces, bridge and folder removed")
        return 1 if problems else 0
    if what == "run" and len(argv) >= 3:
        pid = state["nodes"][argv[1]]["pid"]
        cmd = ["nsenter", "-t", str(pid), "-n", "-u", "-m", f"--wd={os.getcwd()}", "--", *argv[2:]]
        return subprocess.run(cmd, env={**os.environ, **state["env"]}).returncode
    print("usage: ./dev cluster up [NODES] | down | status | run NODE COMMAND...")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
