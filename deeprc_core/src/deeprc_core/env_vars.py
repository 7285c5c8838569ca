"""The environment variables through which the launcher and a job meet.

deeprc-launch sets these on every rank; :func:`deeprc_core.detect_wiring` is their
only reader. They are named here once, so that the launcher and the core can never
disagree on a spelling.

========================  =====================================================
variable                  meaning
========================  =====================================================
DEEPRC_RANK               global rank of this process, 0-based
DEEPRC_WORLD_SIZE         number of ranks in the job
DEEPRC_LOCAL_RANK         rank among the ranks on this node
DEEPRC_LOCAL_WORLD_SIZE   number of ranks on this node
DEEPRC_NODE_RANK          index of this node, 0-based
DEEPRC_NUM_NODES          number of nodes in the job
DEEPRC_MASTER_ADDR        host of rank 0 (rendezvous for torch / the TCP communicator)
DEEPRC_MASTER_PORT        port on rank 0 agreed by the launcher
DEEPRC_HOSTS              comma-separated host of every rank, in rank order
DEEPRC_BACKEND            backend chosen by the launcher: nccl, gloo or mpi (auto/unset: by device);
                          read through :func:`deeprc_core.wiring.requested_backend`
DEEPRC_COMM               communicator the core should use: local, mpi, tcp or torch
DEEPRC_COMM_TIMEOUT       seconds any collective may wait before it fails (default 300)
DEEPRC_RUN_ID             identifier of the launch (names log folders)
DEEPRC_LOG_DIR            folder where the launcher keeps every rank's stdout/stderr
DEEPRC_JOB_SECRET         per-job secret that authenticates the TCP ranks
DEEPRC_TCP_LISTEN_ALL     1 lets a wildcard MASTER_ADDR (0.0.0.0, ::) make the TCP communicator's
                          rank 0 listen on every interface (refused otherwise; logged as a warning)
DEEPRC_MPI_ABORT_ON_ERROR 0 keeps mpi4py's default on an uncaught exception (the core
                          otherwise calls MPI_Abort so no rank waits for a dead one)
DEEPRC_TF_PATCH_KERAS     0 skips deeprc-tf's guarded Keras 3 distribution fixes
DEEPRC_HOME               deeprc-launch's folder: pilot service state, run logs
                          (default ~/.deeprc)
DEEPRC_STACK_KERNEL       how batches are stacked from separate columns: auto (the compiled
                          kernel where built), compiled (require it) or numpy
                          (:mod:`deeprc_core.stacking`)
DEEPRC_DATA               another folder of the example datasets (read by the repo's
                          examples, tests and benchmarks, not by the library)
========================  =====================================================
"""

from __future__ import annotations

RANK = "DEEPRC_RANK"
WORLD_SIZE = "DEEPRC_WORLD_SIZE"
LOCAL_RANK = "DEEPRC_LOCAL_RANK"
LOCAL_WORLD_SIZE = "DEEPRC_LOCAL_WORLD_SIZE"
NODE_RANK = "DEEPRC_NODE_RANK"
NUM_NODES = "DEEPRC_NUM_NODES"
MASTER_ADDR = "DEEPRC_MASTER_ADDR"
MASTER_PORT = "DEEPRC_MASTER_PORT"
HOSTS = "DEEPRC_HOSTS"
BACKEND = "DEEPRC_BACKEND"
COMM = "DEEPRC_COMM"
COMM_TIMEOUT = "DEEPRC_COMM_TIMEOUT"
RUN_ID = "DEEPRC_RUN_ID"
LOG_DIR = "DEEPRC_LOG_DIR"
JOB_SECRET = "DEEPRC_JOB_SECRET"
TCP_LISTEN_ALL = "DEEPRC_TCP_LISTEN_ALL"
MPI_ABORT_ON_ERROR = "DEEPRC_MPI_ABORT_ON_ERROR"
TF_PATCH_KERAS = "DEEPRC_TF_PATCH_KERAS"
HOME = "DEEPRC_HOME"
STACK_KERNEL = "DEEPRC_STACK_KERNEL"
DATA = "DEEPRC_DATA"

#: Every DEEPRC_* variable, in the order of the table above.
ALL = (
    RANK,
    WORLD_SIZE,
    LOCAL_RANK,
    LOCAL_WORLD_SIZE,
    NODE_RANK,
    NUM_NODES,
    MASTER_ADDR,
    MASTER_PORT,
    HOSTS,
    BACKEND,
    COMM,
    COMM_TIMEOUT,
    RUN_ID,
    LOG_DIR,
    JOB_SECRET,
    TCP_LISTEN_ALL,
    MPI_ABORT_ON_ERROR,
    TF_PATCH_KERAS,
    HOME,
    STACK_KERNEL,
    DATA,
)

#: Default seconds a collective may wait for the other ranks.
DEFAULT_COMM_TIMEOUT = 300.0
