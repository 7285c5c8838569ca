"""A pilot that stays up: ``deeprc-launch up|status|down`` and the client ``deeprc-launch script.py`` uses.

``up`` starts ``python -m deeprc_launch.service serve`` in the background. It holds one RP session
and pilot and listens on a Unix socket in ``~/.deeprc/service/`` (folder 0700, socket 0600, and
every connection's peer uid is checked): no TCP port, no other user can submit. The protocol is
one JSON object per line each way: ``status``, ``submit`` (a JobSpec), ``state``, ``cancel``,
``down`` (checked by :mod:`deeprc_launch.service_protocol`: every request gets a reply, a
malformed one an error naming the problem). The service survives a client's Ctrl-C (the
client cancels only its own task); it closes cleanly on ``down``, on SIGTERM, or one minute
before its walltime ends. One service per ``DEEPRC_HOME`` holds a lock for its whole life,
stale files are recognised by that lock, and a pid is signalled only after it is verified
(:mod:`deeprc_launch.service_guard`). Any start-up failure, or SIGTERM/Ctrl-C of ``up``
while the pilot starts, closes the session and so releases the pilot.

The parts: :mod:`~deeprc_launch.service_server` (the ``serve`` process),
:mod:`~deeprc_launch.service_client` (a launch's connection), :mod:`~deeprc_launch.service_commands`
(``up``/``status``/``down``/``serve``) and :mod:`~deeprc_launch.service_files` (where its files
live). This module is the ``python -m deeprc_launch.service`` entry point (the name the pid check
looks for) and re-exports their public names.
"""

from __future__ import annotations

import os
import sys

from .service_client import ServiceClient, ServiceError
from .service_commands import service_main
from .service_files import log_path, read_state, service_dir, socket_path, state_path
from .service_server import EXIT_ALREADY_RUNNING, PilotService

__all__ = [
    "EXIT_ALREADY_RUNNING",
    "PilotService",
    "ServiceClient",
    "ServiceError",
    "log_path",
    "read_state",
    "service_dir",
    "service_main",
    "socket_path",
    "state_path",
]

if __name__ == "__main__":
    code = service_main(sys.argv[1:])
    if sys.argv[1:2] == ["serve"]:
        # The service has closed its session and removed its files; RP can leave non-daemon threads
        # behind (seen after a failed or stopped pilot), which would keep a finished service alive.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
