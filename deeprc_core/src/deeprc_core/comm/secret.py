"""The per-job secret that authenticates the ranks of a TCP job to each other.

Where it comes from, in this order:

1. ``DEEPRC_JOB_SECRET`` (any string of at least 16 characters, the same on every rank).
   deeprc-launch generates one per job; with another launcher, export one yourself.
2. A job whose ranks all run on one host derives it from a per-user key file
   (``~/.deeprc/tcp.key``, created 0600 on first use) and the job's port: only processes
   of this user on this host can read the key, so only they can join the job.
3. Otherwise (several hosts, no variable) there is no secret the ranks could share, and
   the TCP communicator refuses to start: :func:`job_secret` says how to fix it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from .. import env_vars
from ..errors import CommError

#: Shortest secret accepted from DEEPRC_JOB_SECRET.
MIN_SECRET_CHARS = 16

_FIX = (
    f"export {env_vars.JOB_SECRET}=$(python -c 'import secrets; print(secrets.token_hex(32))') "
    "before starting the job, so that every rank inherits the same value, launch it with deeprc-launch "
    f"(which generates one per job), or use MPI ({env_vars.COMM}=mpi)"
)


def user_key_path() -> Path:
    """The per-user key file single-host jobs derive their secret from."""
    return Path.home() / ".deeprc" / "tcp.key"


def _read_private(path: Path) -> bytes:
    st = path.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise CommError(
            f"{path} must be owned by you and readable by you alone (chmod 600 {path}), or set {env_vars.JOB_SECRET}"
        )
    key = path.read_bytes()
    if len(key) < 32:
        raise CommError(f"{path} is truncated ({len(key)} bytes); delete it and rerun")
    return key


def user_key() -> bytes:
    """This user's key, created once (0600) and shared by every single-host job of the user."""
    path = user_key_path()
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".tcp.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # atomic and never replaces: ranks racing here all end up with one key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as exc:
        raise CommError(f"cannot create the TCP communicator's key {path} ({exc}); or {_FIX}") from None
    return _read_private(path)


def job_secret(single_host: bool, port: int) -> bytes:
    """The secret of this job (see the module docstring); raises CommError where there is none."""
    raw = os.environ.get(env_vars.JOB_SECRET, "")
    if raw:
        if len(raw) < MIN_SECRET_CHARS:
            raise CommError(f"{env_vars.JOB_SECRET} is {len(raw)} characters; use at least {MIN_SECRET_CHARS}: {_FIX}")
        return hashlib.sha256(raw.encode()).digest()
    if not single_host:
        raise CommError(
            "the TCP communicator of a job on several hosts needs a shared secret to authenticate its ranks, "
            f"and {env_vars.JOB_SECRET} is not set: {_FIX}"
        )
    return hmac.digest(user_key(), b"deeprc-tcp-job:%d" % port, "sha256")
