"""Where the examples, tests and benchmarks find their data: one lookup for all of them.

Order: the folder named by ``DEEPRC_DATA`` (another copy with the same layout, e.g. one
that also holds ETTh2/ETTm1), then the repository's own ``data/`` folder, which ships
every file the demo and the tests read (see ``data/README.md``). Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from deeprc_core.env_vars import DATA as ENV  # DEEPRC_DATA: another data folder

#: The data shipped inside the repository.
REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def data_roots() -> list[Path]:
    """The folders searched, in order: ``$DEEPRC_DATA`` (when set), then the repo's ``data/``."""
    roots = [Path(os.environ[ENV]).expanduser()] if os.environ.get(ENV) else []
    return [*roots, REPO_DATA]


def data_root() -> Path:
    """The first data folder that exists (``$DEEPRC_DATA``, else the repo's ``data/``)."""
    for root in data_roots():
        if root.is_dir():
            return root
    raise FileNotFoundError(f"no data folder: {' and '.join(map(str, data_roots()))} do not exist")


def data_path(*parts: str) -> Path:
    """The file or folder ``parts`` under the first data folder that has it.

    Raises FileNotFoundError naming every place looked in and how to point at another copy.
    """
    for root in data_roots():
        path = root.joinpath(*parts)
        if path.exists():
            return path
    tried = ", ".join(str(r.joinpath(*parts)) for r in data_roots())
    raise FileNotFoundError(f"{'/'.join(parts)} not found (looked in {tried}); set {ENV} to a folder that has it")
