"""deeprc-core: global tables for distributed data engineering and deep learning.

A *global table* is a distributed dataframe in which every rank of a job holds one
Apache Arrow partition. The core knows about ranks, partitions and memory; the
framework adapters (deeprc-torch, deeprc-tf) only wrap what it hands them.
"""

from __future__ import annotations

from . import env_vars
from .batches import Batch, BatchArrays, EpochRows, TableBatches
from .comm import (
    Communicator,
    LocalCommunicator,
    TCPCommunicator,
    agree,
    get_communicator,
    register_communicator,
    set_default_communicator,
)
from .copies import CopyStats, copy_stats, counting_copies, record_copy, reset_copy_stats
from .errors import (
    CommError,
    CommTimeoutError,
    DeepRCError,
    RankFailedError,
    SchemaError,
    WiringError,
    ZeroCopyError,
)
from .exchange import exchange_tables
from .plan import BatchPlan, PlannedBatch
from .readers import read_csv, read_ipc, read_parquet
from .table import GlobalTable
from .views import (
    aligned_copy,
    array_view,
    column_view,
    column_views,
    ensure_aligned,
    is_aligned,
    is_writable,
    memory_is_readonly,
    pack_columns,
    sliding_windows,
    take_rows,
    to_dlpack_safe,
)
from .windows import Window, with_halo
from .wiring import Wiring, detect_wiring

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchArrays",
    "EpochRows",
    "BatchPlan",
    "PlannedBatch",
    "TableBatches",
    "Window",
    "aligned_copy",
    "array_view",
    "column_view",
    "column_views",
    "ensure_aligned",
    "is_aligned",
    "is_writable",
    "memory_is_readonly",
    "pack_columns",
    "read_csv",
    "read_ipc",
    "read_parquet",
    "sliding_windows",
    "take_rows",
    "to_dlpack_safe",
    "with_halo",
    "CommError",
    "CommTimeoutError",
    "Communicator",
    "CopyStats",
    "DeepRCError",
    "GlobalTable",
    "LocalCommunicator",
    "RankFailedError",
    "SchemaError",
    "TCPCommunicator",
    "Wiring",
    "WiringError",
    "ZeroCopyError",
    "agree",
    "copy_stats",
    "counting_copies",
    "detect_wiring",
    "env_vars",
    "exchange_tables",
    "get_communicator",
    "record_copy",
    "register_communicator",
    "reset_copy_stats",
    "set_default_communicator",
]
