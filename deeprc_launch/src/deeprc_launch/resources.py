"""Resources: the local pilot sized to this machine, and what RP knows about clusters.

RP's own ``local.localhost`` pretends to have 8 cores and 1 GPU; ranks placed on cores that do
not exist fail with exit 1 and an empty stderr. deeprc-launch therefore writes its own resource
``deeprc.local`` (real core and GPU counts, FORK for one rank, MPIRUN for more) into a config
folder it owns and points ``RADICAL_CONFIG_USER_DIR`` at it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprc_core import env_vars

#: Name of the local resource deeprc-launch writes (site ``deeprc``, resource ``local``).
LOCAL_RESOURCE = "deeprc.local"

#: Environment every local pilot and its tasks get: loopback only, and Open MPI allowed as root.
LOCAL_MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    # Tasks share the machine's cores (several pipelines at once): do not pin ranks to cores.
    "OMPI_MCA_hwloc_base_binding_policy": "none",
}


def deeprc_home() -> Path:
    """Folder for deeprc-launch's own state (configs, logs, the service socket): ``$DEEPRC_HOME`` or ``~/.deeprc``."""
    return Path(os.environ.get(env_vars.HOME) or Path.home() / ".deeprc")


def local_gpus() -> int:
    """Number of NVIDIA GPUs this machine has (0 when none or unknown)."""
    proc = Path("/proc/driver/nvidia/gpus")
    try:
        return len(list(proc.iterdir())) if proc.is_dir() else 0
    except OSError:
        return 0


def local_cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_resource_config(cores: int | None = None, gpus: int | None = None) -> dict[str, Any]:
    """The ``deeprc.local`` resource entry: this machine's cores and GPUs, loopback, MPIRUN for many ranks."""
    return {
        "description": "This machine, sized to its real cores and GPUs (written by deeprc-launch).",
        "default_schema": "local",
        "schemas": {"local": {"job_manager_endpoint": "fork://localhost", "filesystem_endpoint": "file://localhost"}},
        "default_remote_workdir": "$HOME",
        "resource_manager": "FORK",
        "agent_config": AGENT_CONFIG,
        "agent_scheduler": "CONTINUOUS",
        "agent_spawner": "POPEN",
        "launch_methods": {"order": ["FORK", "MPIRUN"], "FORK": {}, "MPIRUN": {}},
        "rp_version": "installed",
        "virtenv_mode": "local",
        "python_dist": "default",
        "cores_per_node": cores or local_cores(),
        "gpus_per_node": local_gpus() if gpus is None else gpus,
        "lfs_path_per_node": "/tmp",
        "lfs_size_per_node": 1024,
        "mem_per_node": 4096,
        "fake_resources": True,
        "pre_bootstrap_0": [f"export {k}={v}" for k, v in LOCAL_MPI_ENV.items()],
        "system_architecture": {"oversubscribe": True},
    }


#: Name of the trimmed agent configuration the local pilot uses (``agent_deeprc.json``).
AGENT_CONFIG = "deeprc"
#: Bridges of RP's default agent that no deeprc-launch task uses: each is a process the agent
#: starts one after another (about 1.5 s each on 2 cores) before the pilot becomes active.
UNUSED_AGENT_BRIDGES = ("raptor_scheduling_queue",)


def agent_config() -> dict[str, Any] | None:
    """RP's default agent configuration without :data:`UNUSED_AGENT_BRIDGES` (None if RP's file is missing)."""
    cfg_dir = _rp_config_dir()
    try:
        cfg = json.loads(_strip_comments((cfg_dir / "agent_default.json").read_text())) if cfg_dir else None
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    for name in UNUSED_AGENT_BRIDGES:
        cfg.get("bridges", {}).pop(name, None)
    return cfg


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


def write_local_config(cores: int | None = None, gpus: int | None = None, home: Path | None = None) -> Path:
    """Write ``resource_deeprc.json`` (and its trimmed agent config); return the ``RADICAL_CONFIG_USER_DIR``."""
    base = (home or deeprc_home()) / "radical"
    cfg_dir = user_config_dir(home)
    cfg_dir.mkdir(parents=True, exist_ok=True)
    resource = local_resource_config(cores, gpus)
    agent = agent_config()
    if agent is None:
        resource["agent_config"] = "default"  # RP's own file is not where we look: use it unchanged
    else:
        _write_if_changed(cfg_dir / f"agent_{AGENT_CONFIG}.json", json.dumps(agent, indent=2))
    _write_if_changed(cfg_dir / "resource_deeprc.json", json.dumps({"local": resource}, indent=2))
    return base


def user_config_dir(home: Path | None = None) -> Path:
    """The folder of resource configs RP reads besides its own (``RADICAL_CONFIG_USER_DIR``'s configs)."""
    return (home or deeprc_home()) / "radical" / ".radical" / "pilot" / "configs"


def install_resource_config(path: str | os.PathLike[str], resource: str | None = None, home: Path | None = None) -> str:
    """Make a user's resource config file known to RP; return the ``site.name`` to use as ``--resource``.

    The file holds RP's format: ``{"<name>": {<resource config>}, ...}``. The site is the file's
    ``resource_<site>.json`` part, else the file name without ``.json``. ``resource`` picks one
    entry (``name`` or ``site.name``) when the file has several. The file is copied to
    ``~/.deeprc/radical/.radical/pilot/configs/resource_<site>.json``, where RP looks.
    """
    src = Path(path)
    try:
        entries = json.loads(_strip_comments(src.read_text()))
    except OSError as exc:
        raise ValueError(f"--resource-config {src}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"--resource-config {src}: not JSON ({exc})") from None
    if not isinstance(entries, dict) or not entries or not all(isinstance(v, dict) for v in entries.values()):
        raise ValueError(f'--resource-config {src}: expected {{"<name>": {{...resource config...}}}} (RP\'s format)')
    stem = src.name[: -len(".json")] if src.name.endswith(".json") else src.name
    site = stem[len("resource_") :] if stem.startswith("resource_") else stem
    site = site.replace(".", "_") or "user"
    if site in ("deeprc", "local"):
        site = f"user_{site}"
    if resource:
        name = resource.split(".", 1)[1] if resource.startswith(f"{site}.") else resource
    elif len(entries) == 1:
        name = next(iter(entries))
    else:
        raise ValueError(f"--resource-config {src} holds {sorted(entries)}: choose one with --resource {site}.<name>")
    if name not in entries:
        raise ValueError(f"--resource-config {src} has no entry {name!r}; it has {sorted(entries)}")
    for key in ("resource_manager", "schemas"):
        if key not in entries[name]:
            raise ValueError(f"--resource-config {src}: entry {name!r} lacks {key!r} (see docs/clusters.md)")
    target = user_config_dir(home) / f"resource_{site}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(entries, indent=2)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)
    return f"{site}.{name}"


def is_local(resource: str) -> bool:
    """True for resources that run on this machine (the default and RP's local.* ones)."""
    return resource == LOCAL_RESOURCE or resource.startswith("local.")


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _rp_config_dir() -> Path | None:
    spec = importlib.util.find_spec("radical.pilot")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "configs"


@dataclass(frozen=True)
class ResourceInfo:
    """What RP's resource config says about one cluster."""

    name: str
    cores_per_node: int | None
    gpus_per_node: int | None
    default_queue: str | None
    launch_methods: tuple[str, ...]
    schemas: tuple[str, ...]


def resource_info(resource: str) -> ResourceInfo | None:
    """RP's description of ``site.name`` (e.g. ``ornl.frontier``), or None when RP does not know it."""
    if "." not in resource:
        return None
    site, name = resource.split(".", 1)
    if resource == LOCAL_RESOURCE:
        cfg = local_resource_config()
    else:
        # A user's config (--resource-config) first, then RP's own.
        dirs = [d for d in (user_config_dir(), _rp_config_dir()) if d is not None]
        found = [d / f"resource_{site}.json" for d in dirs if (d / f"resource_{site}.json").is_file()]
        if not found:
            return None
        try:
            cfg = json.loads(_strip_comments(found[0].read_text())).get(name)
        except ValueError:
            return None
        if cfg is None:
            return None
    schemas = cfg.get("schemas", {})
    return ResourceInfo(
        resource,
        cfg.get("cores_per_node"),
        cfg.get("gpus_per_node"),
        cfg.get("default_queue"),
        tuple(cfg.get("launch_methods", {}).get("order", ())),
        tuple(schemas) if isinstance(schemas, (dict, list)) else (),
    )


def known_resources() -> list[str]:
    """Every ``site.name`` in RP's resource configs (for ``--resource`` help and errors)."""
    cfg_dir = _rp_config_dir()
    names = [LOCAL_RESOURCE]
    if cfg_dir is None:
        return names
    for path in sorted(cfg_dir.glob("resource_*.json")):
        site = path.stem[len("resource_") :]
        try:
            names.extend(f"{site}.{n}" for n in json.loads(_strip_comments(path.read_text())))
        except ValueError:
            continue
    return names


def add_resource_options(p: argparse.ArgumentParser) -> None:
    """Options that size and place the pilot (shared by ``run`` and ``up``)."""
    g = p.add_argument_group("pilot")
    g.add_argument(
        "--resource",
        default=None,
        help=f"RP resource, e.g. uva.rivanna, ornl.frontier (default: {LOCAL_RESOURCE}, this machine)",
    )
    g.add_argument(
        "--resource-config",
        default=None,
        metavar="FILE",
        help="your own RP resource config (JSON, RP's format) for a cluster RP does not know; docs/clusters.md",
    )
    g.add_argument("--nodes", type=int, default=None, help="nodes of the pilot / the job")
    g.add_argument("--cores", type=int, default=None, help="cores of a local pilot (default: this machine's)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs of a local pilot (default: this machine's)")
    g.add_argument("--queue", default=None, help="batch queue / partition")
    g.add_argument("--project", default=None, help="allocation / account to charge")
    g.add_argument("--walltime", type=float, default=60.0, help="pilot walltime in minutes (default 60)")
    g.add_argument("--sandbox", default=None, help="pilot sandbox folder on the resource")
    g.add_argument("--keep-sandbox", action="store_true", help="keep RP's sandboxes after the run")
    g.add_argument("-v", "--verbose", action="count", default=0)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
