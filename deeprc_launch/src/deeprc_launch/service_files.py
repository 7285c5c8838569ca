"""Where the pilot service keeps its files: ``$DEEPRC_HOME/service/`` (0700) with its socket, state and log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .resources import deeprc_home


def service_dir() -> Path:
    """Folder of the service's socket, state file and log (created 0700)."""
    path = deeprc_home() / "service"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def socket_path() -> Path:
    """The service's Unix socket."""
    return service_dir() / "pilot.sock"


def state_path() -> Path:
    """JSON file describing the running service (pid, resource, log, state)."""
    return service_dir() / "state.json"


def log_path() -> Path:
    """The service's log file."""
    return service_dir() / "service.log"


def read_state() -> dict[str, Any]:
    """The service's state file ({} when none)."""
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return {}
