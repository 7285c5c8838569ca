"""One job, declared once: :class:`JobSpec`'s fields and, on each, how it travels.

Every field carries a :class:`JobField` record: the check the pilot service applies to a
submitted value, the ``deeprc-launch`` option that sets it (if any) and the bootstrap option
that carries it into the task (if it travels). The command line (:func:`add_job_arguments`,
:func:`job_from_args`), the service protocol (:func:`job_to_wire`, :func:`job_from_wire`) and
the bootstrap's arguments (:func:`bootstrap_argv`, :func:`add_bootstrap_arguments`) are all
made from these records, so a new field is one declaration here plus the code that uses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deeprc_core.wiring import BACKENDS

from .runfiles import env_file
from .wiring_derivation import FRAMEWORKS

#: Exit status of a task stopped by its ``--timeout`` (as ``timeout(1)`` exits).
TIMEOUT_EXIT = 124

#: Upper bounds of a job's counts and times: beyond them a submitted job is a mistake or an attack.
MAX_RANKS = 1 << 20
MAX_GPUS_PER_RANK = 1024.0
MAX_SECONDS = 366 * 86400.0


class JobFieldError(ValueError):
    """A job (from the wire) with a missing, unknown or bad field; the message names it."""


@dataclass(frozen=True)
class Option:
    """One command-line option of a field: deeprc-launch's or the bootstrap's."""

    flag: str
    help: str | None = None
    #: the option's default where it differs from the field's (None: derived after parsing)
    default: Any = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    #: the argument group of deeprc-launch's help (``ranks``, ``wiring``, ``behaviour``)
    group: str = ""
    action: str | None = None
    required: bool = False


@dataclass(frozen=True)
class JobField:
    """How one :class:`JobSpec` field is checked on the wire and spelled on the command lines."""

    check: Callable[[Any], bool]
    #: what ``check`` wants, for the error message
    what: str
    #: the argparse type of both options
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    cli: Option | None = None
    #: None: the field does not travel to the bootstrap
    boot: Option | None = None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_RANKS


def _is_seconds(v: Any) -> bool:
    return _is_number(v) and 0 < v <= MAX_SECONDS


def _is_abs(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("/")


_COUNT = f"a positive integer up to {MAX_RANKS}"
_SECONDS = f"a positive number up to {MAX_SECONDS:g}"


def _job_field(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rule: Any) -> Any:
    return dataclasses.field(default=default, default_factory=factory, metadata={"job": JobField(**rule)})


def _auto_choice(flag: str, choices: tuple[str, ...], help_text: str) -> Any:
    """A wiring choice that defaults to ``auto`` and travels to the bootstrap under the same flag."""
    return _job_field(
        "auto",
        check=lambda v: v in choices,
        what=f"one of {', '.join(choices)}",
        choices=choices,
        cli=Option(flag, help_text, default="auto", group="wiring"),
        boot=Option(flag, default="auto"),
    )


def new_run_id(prefix: str = "run") -> str:
    """A unique, sortable id for one launch (names its log folder)."""
    return f"{prefix}.{time.strftime('%Y%m%d-%H%M%S')}.{secrets.token_hex(3)}"


@dataclass
class JobSpec:
    """One multi-rank task: the user's command and how to place and wire its ranks.

    The order of the fields is the order of deeprc-launch's options in each help group.
    """

    command: list[str] = _job_field(
        check=lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v),
        what="a non-empty list of strings",
    )
    ranks: int = _job_field(
        1,
        check=_is_count,
        what=_COUNT,
        type=int,
        cli=Option("--ranks", "total ranks (default: nodes x ranks-per-node, else 1)", aliases=("-n",), group="ranks"),
    )
    ranks_per_node: int | None = _job_field(
        None,
        check=lambda v: v is None or _is_count(v),
        what=f"{_COUNT} or null",
        type=int,
        cli=Option("--ranks-per-node", group="ranks"),
    )
    gpus_per_rank: float = _job_field(
        0.0,
        check=lambda v: _is_number(v) and 0 <= v <= MAX_GPUS_PER_RANK,
        what=f"a number from 0 to {MAX_GPUS_PER_RANK:g}",
        type=float,
        cli=Option("--gpus-per-rank", default=0.0, group="ranks"),
        boot=Option("--gpus-per-rank", default=0.0),
    )
    cores_per_rank: int = _job_field(
        1, check=_is_count, what=_COUNT, type=int, cli=Option("--cores-per-rank", default=1, group="ranks")
    )
    backend: str = _auto_choice("--backend", BACKENDS, "auto: nccl with GPUs, else gloo")
    framework: str = _auto_choice("--framework", FRAMEWORKS, "which variables to set (auto: all)")
    #: travels in a 0600 file, never on a command line (see :func:`bootstrap_argv`)
    env: dict[str, str] = _job_field(
        factory=dict,
        check=lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
        what="an object of strings",
        cli=Option(
            "--env", "extra variable for every rank", default=[], action="append", metavar="KEY=VALUE", group="wiring"
        ),
    )
    timeout: float | None = _job_field(
        None,
        check=lambda v: v is None or _is_seconds(v),
        what=f"{_SECONDS} or null",
        type=float,
        cli=Option(
            "--timeout",
            f"seconds from the ranks' start before the task is stopped (it then exits {TIMEOUT_EXIT})",
            group="behaviour",
        ),
        boot=Option("--timeout"),
    )
    run_id: str = _job_field(
        factory=new_run_id,
        check=lambda v: isinstance(v, str) and v != "" and "/" not in v,
        what="a non-empty string without '/'",
        boot=Option("--run-id", default=""),
    )
    run_dir: str = _job_field(
        "",
        check=_is_abs,
        what="an absolute path",
        cli=Option(
            "--log-dir", "folder for every rank's stdout/stderr (default ~/.deeprc/runs/<id>)", group="behaviour"
        ),
        boot=Option("--run-dir", "folder for logs and port agreement (shared across nodes)", required=True),
    )
    python: str = _job_field(
        factory=lambda: sys.executable,
        check=lambda v: isinstance(v, str) and v != "",
        what="a non-empty string",
        cli=Option("--python", "interpreter on the resource (default: this one)", group="behaviour"),
    )
    name: str | None = _job_field(None, check=lambda v: v is None or isinstance(v, str), what="a string or null")
    rendezvous_timeout: float = _job_field(
        120.0, check=_is_seconds, what=_SECONDS, type=float, boot=Option("--rendezvous-timeout", default=120.0)
    )
    #: folder every rank starts in: the caller's, as under torchrun (``--chdir`` overrides)
    cwd: str = _job_field(
        factory=os.getcwd,
        check=_is_abs,
        what="an absolute path",
        cli=Option(
            "--chdir",
            "folder every rank starts in (default: the current one, as under torchrun; shared on a cluster)",
            metavar="DIR",
            group="behaviour",
        ),
        boot=Option("--chdir", "folder the command starts in (the caller's, as under torchrun)"),
    )


#: Every field with its record, in declaration order.
FIELDS: tuple[tuple[str, JobField], ...] = tuple((f.name, f.metadata["job"]) for f in dataclasses.fields(JobSpec))


def _add(target: Any, name: str, rule: JobField, opt: Option) -> None:
    kw: dict[str, Any] = {"dest": name, "default": opt.default, "help": opt.help, "required": opt.required}
    kw["metavar"] = opt.metavar or (None if rule.choices else opt.flag.lstrip("-").upper().replace("-", "_"))
    if opt.action:
        kw["action"] = opt.action
    else:
        kw.update(type=rule.type, choices=rule.choices)
    if not opt.required:
        del kw["required"]
    target.add_argument(opt.flag, *opt.aliases, **kw)


def add_job_arguments(groups: Mapping[str, Any]) -> None:
    """Add deeprc-launch's option of every job field whose help group (``ranks``, ``wiring``,
    ``behaviour``) is in ``groups``, in declaration order (a parser calls it once per place).

    Each value lands in the namespace under the field's name (``--log-dir`` in ``ns.run_dir``).
    """
    for name, rule in FIELDS:
        if rule.cli is not None and rule.cli.group in groups:
            _add(groups[rule.cli.group], name, rule, rule.cli)


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` values as a dict; ValueError naming the one without ``=``."""
    env = {}
    for kv in pairs:
        if "=" not in kv:
            raise ValueError(f"--env {kv!r} is not KEY=VALUE")
        k, v = kv.split("=", 1)
        env[k] = v
    return env


def job_from_args(ns: argparse.Namespace, **derived: Any) -> JobSpec:
    """The job a parsed deeprc-launch command line gives: every option as it is, then ``derived``
    (the fields worked out from several options: command, ranks, run id and folder, ...)."""
    given = {name: getattr(ns, name) for name, rule in FIELDS if rule.cli is not None}
    given["env"] = parse_env(given["env"])
    given = {k: v for k, v in given.items() if v is not None}  # unset: the field's default
    return JobSpec(**{**given, **derived})


def job_to_wire(job: JobSpec) -> dict[str, Any]:
    """The job as the JSON object a client submits to the pilot service."""
    return dataclasses.asdict(job)


def job_from_wire(job: Any) -> JobSpec:
    """A JobSpec from a submitted JSON object, every field checked (JobFieldError names the first bad one)."""
    if not isinstance(job, dict):
        raise JobFieldError(f"job must be an object, not {type(job).__name__}")
    rules = dict(FIELDS)
    unknown = sorted(set(job) - set(rules))
    if unknown:
        raise JobFieldError(f"unknown job field(s) {unknown}")
    if "command" not in job:
        raise JobFieldError("job has no 'command'")
    for name, value in job.items():
        if not rules[name].check(value):
            raise JobFieldError(f"job field {name!r} must be {rules[name].what}, got {json.dumps(value)[:80]}")
    return JobSpec(**job)


def add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bootstrap's option of every field that travels into the task."""
    for name, rule in FIELDS:
        if rule.boot is not None:
            _add(parser, name, rule, rule.boot)


def bootstrap_argv(job: JobSpec) -> list[str]:
    """Arguments of ``python -m deeprc_launch.bootstrap ... -- command`` for this job."""
    args = ["-m", "deeprc_launch.bootstrap"]
    for name, rule in FIELDS:
        value = getattr(job, name)
        if rule.boot is not None and value is not None and value != "":
            args += [rule.boot.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if job.env:
        # Never on a command line (`ps` shows it to every user): a 0600 file the client writes
        # (runfiles.write_job_env) before it submits the task.
        args += ["--env-file", str(env_file(job.run_dir))]
    return [*args, "--", *job.command]
