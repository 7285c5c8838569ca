"""``deeprc_tf.strategy()``: the right ``tf.distribute`` strategy for how this job was wired.

=====================================  ===========================================
job (from ``deeprc_core.detect_wiring``)  strategy
=====================================  ===========================================
several processes                      MultiWorkerMirroredStrategy (RING on CPU,
                                       NCCL on GPUs) with a derived TF_CONFIG
one process, several GPUs              MirroredStrategy
one process, one GPU or CPU            the default strategy
=====================================  ===========================================

It must run before TensorFlow runs any op. Before the strategy exists, the ranks
agree on their gRPC ports through the core communicator (no TensorFlow involved);
collectives and the coordination service get the core's timeout
(``DEEPRC_COMM_TIMEOUT``), so a dead or failing worker fails the others in bounded
time instead of hanging them. Keras 3 is patched for keras-team/keras#20585 (see
:mod:`deeprc_tf.keras_compat`) before the strategy is returned.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Literal

from deeprc_core.comm import default_timeout
from deeprc_core.network import apply_socket_ifname
from deeprc_core.wiring import requested_backend, resolve_backend

from deeprc_core import Wiring, detect_wiring, get_communicator

from .cluster import TF_CONFIG, derive_tf_config
from .keras_compat import patch_keras
from .startup import require_fresh_tf

logger = logging.getLogger("deeprc.tf")

Communication = Literal["auto", "nccl", "ring"]


def _pin_local_gpus(wiring: Wiring) -> list[Any]:
    """Give each rank of a node its share of the node's GPUs (before TF starts); return them."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus or wiring.local_world_size <= 1 or len(gpus) < wiring.local_world_size:
        return gpus  # already restricted (e.g. CUDA_VISIBLE_DEVICES per rank), or nothing to split
    per = len(gpus) // wiring.local_world_size
    mine = gpus[wiring.local_rank * per : (wiring.local_rank + 1) * per]
    tf.config.set_visible_devices(mine, "GPU")
    return mine


def _configure_coordination(cfg: dict[str, Any], timeout: float) -> None:
    """Start TF's coordination service with our timeouts (TF would use minutes-long defaults)."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    workers = len(cfg["cluster"]["worker"])
    ms = int(timeout * 1000)
    try:
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader="/job:worker/replica:0/task:0",
            heartbeat_timeout_in_ms=ms,
            cluster_register_timeout_in_ms=ms,
            shutdown_barrier_timeout_in_ms=ms,
            coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=workers)],
        )
    except (AttributeError, TypeError) as exc:  # a TF without these knobs: keep its defaults
        logger.warning("deeprc_tf: could not set coordination timeouts (%s); using TensorFlow's defaults", exc)


def _quiet_worker(wiring: Wiring) -> None:
    """Keras progress bars and fit logs from the chief only: other workers send them to absl (hidden by default)."""
    if wiring.rank != 0:
        import keras

        keras.config.disable_interactive_logging()


#: TF's collective implementation for each resolved backend: NCCL for nccl, RING (gRPC) for gloo and mpi.
_TF_COMMUNICATION: dict[str, Communication] = {"nccl": "nccl", "gloo": "ring", "mpi": "ring"}


def _communication(communication: Communication, asked: str | None, *, has_gpu: bool) -> Communication:
    """``communication`` as ``nccl`` or ``ring``: ``auto`` takes the core's resolution of the launcher's backend."""
    if communication != "auto":
        return communication
    return _TF_COMMUNICATION[resolve_backend(asked, has_gpu)]


def strategy(communication: Communication = "auto", *, timeout: float | None = None, worker_logs: bool = False) -> Any:
    """Build the ``tf.distribute.Strategy`` for this job. Call it first, before any TF op.

    ``communication``: ``"auto"`` (what ``DEEPRC_BACKEND`` asks for, else NCCL when this
    worker has GPUs, else RING),
    ``"nccl"`` or ``"ring"``. ``timeout`` (seconds) bounds every collective and the
    detection of a lost worker; it defaults to ``DEEPRC_COMM_TIMEOUT`` (300 s). Keras's
    progress bars and logs print from the chief (rank 0) only, unless ``worker_logs=True``.
    Raises :class:`~deeprc_tf.startup.TFAlreadyStartedError` when TensorFlow has
    already run ops, and :class:`~deeprc_tf.keras_compat.KerasPatchError` on a Keras 3
    the #20585 workaround does not know.
    """
    if communication not in ("auto", "nccl", "ring"):
        raise ValueError(f"communication={communication!r}: choose 'auto', 'nccl' or 'ring'")
    # auto: the launcher's --backend (DEEPRC_BACKEND), read now so that a bad value fails before TF starts
    asked = requested_backend() if communication == "auto" else None
    wiring = detect_wiring()
    timeout = default_timeout() if timeout is None else float(timeout)
    if wiring.world_size == 1:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) > 1:
            require_fresh_tf("deeprc_tf.strategy() (MirroredStrategy over several GPUs)")
            patch_keras()  # the scalar-loss scaling fix applies to every multi-replica strategy
            nccl = _communication(communication, asked, has_gpu=True) == "nccl"
            cross = tf.distribute.NcclAllReduce() if nccl else tf.distribute.HierarchicalCopyAllReduce()
            return tf.distribute.MirroredStrategy(cross_device_ops=cross)
        return tf.distribute.get_strategy()

    require_fresh_tf()
    patch_keras()  # fails loudly on an unknown Keras before any rank commits to the cluster
    comm = get_communicator(wiring)
    cfg = derive_tf_config(wiring, comm)
    require_fresh_tf()
    os.environ[TF_CONFIG] = json.dumps(cfg)
    import tensorflow as tf

    gpus = _pin_local_gpus(wiring)
    communication = _communication(communication, asked, has_gpu=bool(gpus))
    if communication == "nccl" and not gpus:
        raise ValueError(
            "communication='nccl' (or DEEPRC_BACKEND=nccl, deeprc-launch --backend nccl) needs GPUs, but this "
            "worker sees none; use 'ring' / --backend gloo, or 'auto'"
        )
    apply_socket_ifname(wiring.master_addr, wiring.num_nodes)  # NCCL across nodes: the interface toward rank 0
    impl = tf.distribute.experimental.CommunicationImplementation
    chosen = impl.NCCL if communication == "nccl" else impl.RING
    _configure_coordination(cfg, timeout)
    options = tf.distribute.experimental.CommunicationOptions(implementation=chosen, timeout_seconds=timeout)
    logger.info("deeprc_tf: MultiWorkerMirroredStrategy, worker %d of %d, %s", wiring.rank, wiring.world_size, chosen)
    if not worker_logs:
        _quiet_worker(wiring)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
