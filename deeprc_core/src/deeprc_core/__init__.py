"""deeprc-core: global tables for distributed data engineering and deep learning.

A *global table* is a distributed dataframe in which every rank of a job holds one
Apache Arrow partition. The core knows about ranks, partitions and memory; the
framework adapters (deeprc-torch, deeprc-tf) only wrap what it hands them.

Attributes are imported lazily (PEP 562): ``import deeprc_core.wiring`` or
``deeprc_core.env_vars`` costs no pyarrow import (the launcher's in-task bootstrap relies
on it); ``deeprc_core.read_csv`` and friends load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import env_vars

if TYPE_CHECKING:  # the static view of the lazy attributes below
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
    from .prediction import Predictions, gather_predictions, predict_all, prediction_batches
    from .readers import read_csv, read_ipc, read_parquet
    from .readonly import ReadOnlyBatchWarning, ReadOnlyPolicy, is_writable, memory_is_readonly, to_dlpack_safe
    from .table import GlobalTable
    from .views import (
        aligned_copy,
        array_view,
        column_view,
        column_views,
        ensure_aligned,
        is_aligned,
        pack_columns,
        sliding_windows,
        take_rows,
    )
    from .windows import Window, with_halo
    from .wiring import Wiring, detect_wiring

#: public name -> submodule that defines it (loaded on first access)
_LAZY = {
    "Batch": "batches",
    "BatchArrays": "batches",
    "EpochRows": "batches",
    "TableBatches": "batches",
    "Communicator": "comm",
    "LocalCommunicator": "comm",
    "TCPCommunicator": "comm",
    "agree": "comm",
    "get_communicator": "comm",
    "register_communicator": "comm",
    "set_default_communicator": "comm",
    "CopyStats": "copies",
    "copy_stats": "copies",
    "counting_copies": "copies",
    "record_copy": "copies",
    "reset_copy_stats": "copies",
    "CommError": "errors",
    "CommTimeoutError": "errors",
    "DeepRCError": "errors",
    "RankFailedError": "errors",
    "SchemaError": "errors",
    "WiringError": "errors",
    "ZeroCopyError": "errors",
    "exchange_tables": "exchange",
    "BatchPlan": "plan",
    "PlannedBatch": "plan",
    "Predictions": "prediction",
    "gather_predictions": "prediction",
    "predict_all": "prediction",
    "prediction_batches": "prediction",
    "read_csv": "readers",
    "read_ipc": "readers",
    "read_parquet": "readers",
    "GlobalTable": "table",
    "aligned_copy": "views",
    "array_view": "views",
    "column_view": "views",
    "column_views": "views",
    "ensure_aligned": "views",
    "is_aligned": "views",
    "is_writable": "readonly",
    "memory_is_readonly": "readonly",
    "pack_columns": "views",
    "sliding_windows": "views",
    "take_rows": "views",
    "to_dlpack_safe": "readonly",
    "ReadOnlyBatchWarning": "readonly",
    "ReadOnlyPolicy": "readonly",
    "Window": "windows",
    "with_halo": "windows",
    "Wiring": "wiring",
    "detect_wiring": "wiring",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deeprc_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchArrays",
    "EpochRows",
    "BatchPlan",
    "PlannedBatch",
    "Predictions",
    "gather_predictions",
    "predict_all",
    "prediction_batches",
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
    "ReadOnlyBatchWarning",
    "ReadOnlyPolicy",
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
