"""Result tables (markdown, CSV, JSON) with the paper's values beside this project's."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The paper's Table 3 (ETTh1, horizon 96, NeuralForecast models): (MAE, MSE) on the
#: normalised scale, as quoted in the project's issue #8. Models not quoted there are absent.
PAPER_TABLE3: dict[str, tuple[float, float]] = {
    "NLinear": (0.42, 0.39),
    "PatchTST": (0.37, 0.32),
    "NBEATS": (0.39, 0.36),
    "TiDE": (0.36, 0.34),
    "GRU": (0.52, 0.59),
}


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers with ``digits`` decimals, missing values as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], digits: int = 3) -> str:
    """A GitHub markdown table of ``rows``; ``columns`` are ``(key, header)`` pairs."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(fmt(r.get(k), digits) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def write_table(
    out_dir: str | os.PathLike[str],
    stem: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    preamble: str = "",
    digits: int = 3,
) -> dict[str, Path]:
    """Write ``stem``.md (with ``preamble``), .csv and .json into ``out_dir``; return the paths."""
    out = Path(out_dir)
    md = out / f"{stem}.md"
    md.write_text((preamble.rstrip() + "\n\n" if preamble else "") + markdown_table(rows, columns, digits) + "\n")
    path_csv = out / f"{stem}.csv"
    with path_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k, _ in columns], extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k, _ in columns})
    path_json = out / f"{stem}.json"
    path_json.write_text(json.dumps(list(rows), indent=2, default=float) + "\n")
    return {"md": md, "csv": path_csv, "json": path_json}


ETT_COLUMNS = [
    ("model", "model"),
    ("mae", "MAE"),
    ("mse", "MSE"),
    ("ot_mae", "OT MAE"),
    ("ot_mse", "OT MSE"),
    ("ot_mape", "OT MAPE %"),
    ("paper_mae", "paper MAE"),
    ("paper_mse", "paper MSE"),
    ("epochs", "epochs (best)"),
    ("train_s", "train s"),
    ("params", "params"),
]

CAMELS_COLUMNS = [
    ("basin", "basin"),
    ("name", "name"),
    ("nse", "NSE"),
    ("nnse", "NNSE"),
    ("mse", "MSE (mm²/d²)"),
    ("test_days", "test days"),
]
