"""Rank bodies run across the simulated cluster's nodes (by tests/cluster/launch.py)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any


def wiring() -> dict[str, Any]:
    """What this rank was told and what it derived: wiring, rendezvous, interface, TF_CONFIG; plus a gloo all-reduce."""
    import torch
    import torch.distributed as dist
    from deeprc_core.network import interface_addresses
    from deeprc_tf.cluster import derive_tf_config
    from deeprc_torch.distributed import init_process_group, rendezvous

    from deeprc_core import detect_wiring, get_communicator

    w = detect_wiring()
    comm = get_communicator(w)  # before torch: the core's own communicator (MPI or TCP)
    tf_config = derive_tf_config(w, comm)
    addr, port = rendezvous(w)
    init_process_group()
    total = torch.tensor([float(w.rank)])
    dist.all_reduce(total)
    result = {
        "rank": w.rank,
        "world_size": w.world_size,
        "local_rank": w.local_rank,
        "local_world_size": w.local_world_size,
        "node_rank": w.node_rank,
        "num_nodes": w.num_nodes,
        "source": w.source,
        "comm": comm.kind,
        "hostname": socket.gethostname(),
        "master_addr": addr,
        "master_ip": socket.gethostbyname(addr),
        "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
        "nccl_ifname": os.environ.get("NCCL_SOCKET_IFNAME"),
        "interfaces": interface_addresses(),
        "tf_config": json.loads(json.dumps(tf_config)),
        "allreduce": float(total.item()),
        "backend": dist.get_backend(),
    }
    dist.destroy_process_group()
    return result


def lightning_rank3_sigkilled() -> None:
    """Lightning DDP on ETTh1 in which rank 3 SIGKILLs itself at its 4th training batch (mid-epoch)."""
    import signal
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "torch"))
    import ranks_lightning as rl

    pl, flav = rl.flavour("lightning")

    class KillRank3(pl.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_rank == 3 and batch_idx == 3:
                print(f"rank 3 on {socket.gethostname()}: SIGKILL to myself", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    trainer = rl.make_trainer(pl, flav, callbacks=[KillRank3()], max_epochs=3)
    trainer.fit(rl.make_model(pl), datamodule=rl.make_datamodule(flav))


def allreduce_loop(seconds: str = "600") -> None:
    """All-reduce over gloo every 0.2 s for ``seconds`` (a job that notices lost peers at once)."""
    import time

    import torch
    import torch.distributed as dist
    from deeprc_torch.distributed import init_process_group

    init_process_group()
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        dist.all_reduce(torch.ones(1))
        time.sleep(0.2)
