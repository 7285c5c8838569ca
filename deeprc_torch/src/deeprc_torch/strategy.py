"""The DDP strategy logic shared by both Lightning flavours.

DDP with :class:`DeepRCEnvironment`, the backend the launcher asked for (``DEEPRC_BACKEND``,
``deeprc-launch --backend``), else ``nccl`` on CUDA and ``gloo`` otherwise, and a
process-group timeout of 5 minutes (``DEEPRC_COMM_TIMEOUT`` or ``timeout=`` change it)
instead of Lightning's 30, so a rank that dies or hangs fails the job in minutes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from deeprc_core.network import apply_socket_ifname

from .distributed import default_backend, pg_timeout


class StrategyLogic:
    """Everything DeepRCStrategy does (a mixin before ``DDPStrategy``)."""

    #: the environment class of the same Lightning flavour (set by the flavour module)
    environment_class: type
    cluster_environment: Any
    parallel_devices: list[torch.device] | None
    _process_group_backend: str | None

    def __init__(
        self,
        *,
        timeout: float | timedelta | None = None,
        process_group_backend: str | None = None,
        cluster_environment: Any = None,
        **kwargs: Any,
    ) -> None:
        if process_group_backend is None:
            default_backend()  # a DEEPRC_BACKEND this rank cannot honour (nccl without a GPU) fails here, at once
        super().__init__(  # type: ignore[call-arg]
            cluster_environment=cluster_environment if cluster_environment is not None else self.environment_class(),
            process_group_backend=process_group_backend,
            timeout=pg_timeout(timeout),
            **kwargs,
        )

    @property
    def root_device(self) -> torch.device:
        """This rank's device: by local rank among the Trainer's devices, or one per process."""
        devices = self.parallel_devices or [torch.device("cpu")]
        local = int(self.cluster_environment.local_rank())
        if local < len(devices):
            return devices[local]
        first = devices[0]
        if first.type != "cuda":
            return first  # CPU ranks share the host
        count = torch.cuda.device_count()
        if count == 1:
            return torch.device("cuda", 0)  # the launcher gave each rank its own visible GPU
        if local < count:
            return torch.device("cuda", local)
        raise RuntimeError(
            f"local rank {local} has no GPU: {count} visible on this node. Start at most {count} ranks per node, "
            "or give each rank one GPU (CUDA_VISIBLE_DEVICES)"
        )

    @property
    def num_nodes(self) -> int:
        """Nodes of the job, from the launcher."""
        return int(self.cluster_environment.wiring.num_nodes)

    @num_nodes.setter
    def num_nodes(self, num_nodes: int) -> None:
        pass  # the launcher's count wins over Trainer(num_nodes=...)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        """For map-style loaders of the user's own: one replica per rank of the job."""
        return {"num_replicas": self.cluster_environment.world_size(), "rank": self.cluster_environment.global_rank()}

    def _get_process_group_backend(self) -> str:
        return self._process_group_backend or default_backend(self.root_device)

    def setup_environment(self) -> None:
        """Check the Trainer's devices against the launcher, then set up DDP."""
        self.cluster_environment.validate_settings(len(self.parallel_devices or [None]), 1)
        # Across nodes, gloo/NCCL must use the interface that reaches rank 0 (unless the user chose one).
        apply_socket_ifname(self.cluster_environment.main_address, self.num_nodes)
        super().setup_environment()  # type: ignore[misc]
