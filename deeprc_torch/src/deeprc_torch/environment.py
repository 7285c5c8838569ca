"""The cluster-environment logic shared by both Lightning flavours, read from ``detect_wiring()``.

Ranks come from whichever launcher started the job (deeprc-launch, torchrun, mpirun,
srun, ...), with the node-local rank and node index taken from the launcher instead of
guessed from devices, so several ranks on one host with ``devices=1`` each get their own
local rank (Lightning's MPIEnvironment does not).
"""

from __future__ import annotations

import logging
import os

from deeprc_core.launchers import DEEPRC

from deeprc_core import Wiring, detect_wiring

from .distributed import rendezvous

log = logging.getLogger(__name__)


class EnvironmentLogic:
    """Everything DeepRCEnvironment does (a mixin before ``ClusterEnvironment``)."""

    def __init__(self, wiring: Wiring | None = None) -> None:
        self.wiring = detect_wiring() if wiring is None else wiring

    @property
    def creates_processes_externally(self) -> bool:
        """Always: the launcher started every rank."""
        return True

    @property
    def main_address(self) -> str:
        """Rank 0's host (agreed through MPI when the launcher set none)."""
        return rendezvous(self.wiring)[0]

    @property
    def main_port(self) -> int:
        """The rendezvous port (agreed through MPI when the launcher set none)."""
        return rendezvous(self.wiring)[1]

    @staticmethod
    def detect() -> bool:
        """True under deeprc-launch (its record in the core's launcher table detects the rank's variables)."""
        return DEEPRC.detect(os.environ)

    def world_size(self) -> int:
        """Number of ranks in the job."""
        return self.wiring.world_size

    def set_world_size(self, size: int) -> None:
        """Ignored: the launcher fixed the world size."""
        log.debug("DeepRCEnvironment.set_world_size(%s) ignored; the launcher fixed it", size)

    def global_rank(self) -> int:
        """This process's rank."""
        return self.wiring.rank

    def set_global_rank(self, rank: int) -> None:
        """Ignored: the launcher fixed the rank."""
        log.debug("DeepRCEnvironment.set_global_rank(%s) ignored; the launcher fixed it", rank)

    def local_rank(self) -> int:
        """Rank among the ranks on this node."""
        return self.wiring.local_rank

    def node_rank(self) -> int:
        """Index of this node."""
        return self.wiring.node_rank

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Reject Trainer settings that contradict the launcher (defaults and exact matches pass)."""
        w = self.wiring
        exact = num_devices * num_nodes == w.world_size
        per_node = num_devices in (1, w.local_world_size) and num_nodes in (1, w.num_nodes)
        if not (exact or per_node):
            raise ValueError(
                f"Trainer(devices={num_devices}, num_nodes={num_nodes}) contradicts the launcher ({w.source}): "
                f"{w.world_size} ranks on {w.num_nodes} node(s), {w.local_world_size} per node. "
                "Leave devices/num_nodes at their defaults under DeepRCStrategy, or match the launcher"
            )

    def __repr__(self) -> str:
        w = self.wiring
        return (
            f"DeepRCEnvironment(rank {w.rank} of {w.world_size}, local {w.local_rank}, node {w.node_rank}, {w.source})"
        )
