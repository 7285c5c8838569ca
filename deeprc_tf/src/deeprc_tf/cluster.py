"""TF_CONFIG for MultiWorkerMirroredStrategy, derived from the core's wiring.

No TensorFlow here: the ranks agree on their gRPC addresses through the core
communicator (pure Python sockets or MPI), which is safe to use before the strategy
exists — TensorFlow must not run a single op before the strategy is created.

Every rank binds a free port on its *own* host and the ranks allgather ``host:port``,
so nothing assumes that all ranks share one host or that a port range is free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from deeprc_core.network import address_toward, free_port

from deeprc_core import Communicator, Wiring, WiringError, agree

#: The environment variable TensorFlow's TFConfigClusterResolver reads.
TF_CONFIG = "TF_CONFIG"


def own_host(wiring: Wiring) -> str:
    """The address other ranks reach this rank at.

    ``DEEPRC_HOSTS`` (set by deeprc-launch) names every rank's host; otherwise a
    single-node job uses MASTER_ADDR (often 127.0.0.1) and a multi-node job the
    address of the interface toward rank 0's host (:mod:`deeprc_core.network`).
    """
    if wiring.hosts:
        return wiring.hosts[wiring.rank]
    if wiring.num_nodes == 1 and wiring.master_addr:
        return wiring.master_addr
    return address_toward(wiring.master_addr)


def parse_tf_config(raw: str) -> dict[str, Any]:
    """The parsed TF_CONFIG, or a WiringError naming what is wrong with it."""
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        if task.get("type") != "worker" or not isinstance(workers, list):
            raise ValueError("only a 'worker' cluster is supported")
        int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WiringError(f"{TF_CONFIG} is set but unusable ({exc}): {raw!r}") from None
    return cfg


def check_tf_config(cfg: Mapping[str, Any], wiring: Wiring) -> None:
    """Raise WiringError when an existing TF_CONFIG contradicts the wiring."""
    workers = cfg["cluster"]["worker"]
    index = int(cfg["task"]["index"])
    if len(workers) != wiring.world_size or index != wiring.rank or set(cfg["cluster"]) - {"worker"}:
        raise WiringError(
            f"{TF_CONFIG} describes task {index} of {len(workers)} workers (jobs {sorted(cfg['cluster'])}), but the "
            f"wiring from {wiring.source!r} says rank {wiring.rank} of {wiring.world_size}; unset {TF_CONFIG} "
            "to let deeprc_tf derive it"
        )


def derive_tf_config(wiring: Wiring, comm: Communicator, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The TF_CONFIG of this rank (collective: every rank must call it).

    An existing TF_CONFIG (e.g. from deeprc-launch) is kept when it matches the
    wiring on every rank; otherwise every rank picks a port on its own host and the
    ranks allgather their ``host:port``.
    """
    env = os.environ if environ is None else environ
    raw = env.get(TF_CONFIG, "")
    err: Exception | None = None
    cfg: dict[str, Any] | None = None
    if raw:
        try:
            cfg = parse_tf_config(raw)
            check_tf_config(cfg, wiring)
        except WiringError as exc:
            err = exc
    # Either every rank keeps its TF_CONFIG or none does: a mixed cluster would never meet.
    agree(comm, err, "TF_CONFIG")
    keep = all(comm.allgather(cfg is not None))
    if keep and cfg is not None:
        return cfg
    host = own_host(wiring)
    addresses = comm.allgather(f"{_bracket(host)}:{free_port(host)}")
    return {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": wiring.rank}}


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
