"""Short GPU check: pinned, prefetched host-to-device batches versus a plain ``.to(device)`` loop, and
a 1-GPU NCCL DDP smoke run with DeepRCStrategy.

    python bench/gpu_check.py [--rows 2000000] [--batch 4096]

Prints one JSON object; exits 0 without a CUDA device (nothing to check).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch


def _table(rows: int, features: int) -> Any:
    import deeprc_core as dc

    x = np.random.default_rng(0).random((rows, features), dtype=np.float32)
    y = np.zeros(rows, dtype=np.float32)
    values = pa.Array.from_buffers(pa.float32(), rows * features, [None, pa.py_buffer(x)])
    return dc.GlobalTable(pa.table({"x": pa.FixedSizeListArray.from_arrays(values, features), "y": y}))


def _consume(batches: Any, device: torch.device, work: torch.Tensor) -> tuple[float, int]:
    """Iterate with a little GPU compute per batch (so copies can overlap it); returns (seconds, batches)."""
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    n = 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        (x @ work).sum().add_(y.sum())  # stand-in for a model step
        n += 1
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0, n


def h2d(rows: int, batch: int, features: int) -> dict[str, Any]:
    """Batches/s to the GPU: Deep RC staged (pinned + prefetch) vs the same batches with plain .to()."""
    import deeprc_torch as dt

    device = torch.device("cuda", 0)
    work = torch.randn(features, 512, device=device)
    table = _table(rows, features)
    out: dict[str, Any] = {}
    for shuffle in (False, True):
        plain = dt.loader(table, "x", "y", batch, shuffle=shuffle, pin_memory=False)
        staged = dt.loader(table, "x", "y", batch, shuffle=shuffle, device=device, pin_memory=True, prefetch=2)
        _consume(staged, device, work)  # warm-up (CUDA context, host allocator)
        t_plain, n = _consume(plain, device, work)
        t_staged, _ = _consume(staged, device, work)
        out[f"shuffle={shuffle}"] = {
            "batches": n,
            "plain_to_device_batches_per_s": n / t_plain,
            "pinned_prefetch_batches_per_s": n / t_staged,
            "speedup": t_plain / t_staged,
        }
    return out


def ddp_smoke() -> dict[str, Any]:
    """One-rank NCCL DDP through DeepRCStrategy and DeepRCDataModule."""
    import lightning as L

    from deeprc_torch import DeepRCDataModule, DeepRCStrategy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(16, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            assert x.is_cuda, "batches must arrive on the GPU"
            return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    strategy = DeepRCStrategy()
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        strategy=strategy,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(), datamodule=DeepRCDataModule(lambda: _table(100_000, 16), "x", "y", 1024))
    return {
        "backend": torch.distributed.get_backend(),
        "device": str(strategy.root_device),
        "steps": trainer.global_step,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--features", type=int, default=16)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return
    report = {"device": torch.cuda.get_device_name(0), "h2d": h2d(args.rows, args.batch, args.features)}
    report["ddp"] = ddp_smoke()
    print(json.dumps(report, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
