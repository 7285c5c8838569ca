"""A run folder's private files: the folder (0700), the job's ``--env`` values and its secret (0600).

Nothing secret travels on a command line (``ps`` shows every user's): ``--env`` values go to
``<run dir>/job-env.json``, which the client writes before it submits the task and every rank's
bootstrap reads (``--env-file``). Rank 0's bootstrap creates the job's secret. Both files are
created exclusively, and both are read only after the owner and mode check the TCP
communicator applies to ``~/.deeprc/tcp.key`` (owned by this user, no group/other bits), so a
file another user planted in a shared run folder is refused, never adopted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from deeprc_core.comm.secret import _read_private  # the tcp.key check: one owner/mode rule for every secret
from deeprc_core.errors import CommError

#: Name of the file holding a job's ``--env`` values (inside its run folder).
ENV_FILE = "job-env.json"
#: Name of the job secret's file (inside the run's rendezvous folder).
SECRET_FILE = "secret"


class PrivateFileError(RuntimeError):
    """A private file of the run exists where it must not, or is not this user's alone."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700; a folder we cannot chmod (not ours) is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(PermissionError):
        os.chmod(path, 0o700)
    return path


def create_private(path: Path, text: str) -> None:
    """Write a new file readable by this user only; raises PrivateFileError if one is already there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise PrivateFileError(
            f"{path} already exists: a file there was not written by this job (someone may have planted it in a "
            "shared run folder); refusing to use it. Use a --log-dir only you can write to."
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def read_private(path: Path) -> str:
    """The text of a file that only this user owns and can read; PrivateFileError otherwise."""
    try:
        return _read_private(path).decode()
    except CommError as exc:
        raise PrivateFileError(f"refusing {path}: {exc}") from None


def env_file(run_dir: str) -> Path:
    """Where a job's ``--env`` values are kept."""
    return Path(run_dir) / ENV_FILE


def write_job_env(run_dir: str, run_id: str, env: dict[str, str]) -> Path:
    """Write the job's ``--env`` values (0600, replacing an earlier run's) before its task is submitted."""
    path = env_file(run_dir)
    private_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a reused --log-dir: the earlier run's file (or a planted one) goes
    # The run id pads the file past the 32 bytes the shared check asks of a key file.
    create_private(path, json.dumps({"run_id": run_id, "env": env}))
    return path


def read_job_env(path: Path) -> dict[str, str]:
    """The ``--env`` values the client wrote (owner and mode checked)."""
    data = json.loads(read_private(path))
    return {str(k): str(v) for k, v in data["env"].items()}


def write_job_secret(rdv: Path) -> None:
    """Rank 0: a fresh secret for this job, created exclusively (a file already there is refused)."""
    create_private(rdv / SECRET_FILE, secrets.token_hex(32))


def read_job_secret(rdv: Path) -> str:
    """The job's secret rank 0 wrote, after the owner and mode check."""
    return read_private(rdv / SECRET_FILE).strip()
