"""The pipeline API: many multi-rank tasks, with dependencies, in one pilot.

>>> with Launcher() as launcher:                                   # doctest: +SKIP
...     join = launcher.submit("join.py", ["--part", "a"], ranks=2)
...     train = launcher.submit("train.py", ranks=2, after=[join])
...     launcher.wait()
...     print(train.exit_code, train.stdout_path)

A task whose dependency failed is never started (state ``CANCELED``, reason in ``error``);
a failing task does not stop the pilot or any other pipeline.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .descriptions import PilotSpec, default_run_dir, resolve_command, task_description
from .jobspec import JobSpec, new_run_id
from .output import RunResult, collect
from .resources import LOCAL_RESOURCE
from .runfiles import private_dir, write_job_env
from .session import FINAL_STATES, PilotSession, Progress


class _Submitting:
    """Placeholder for an RP task being submitted right now."""

    state = "SUBMITTING"
    uid = ""


_SUBMITTING: Any = _Submitting()


class TaskHandle:
    """A future-like handle on one submitted task."""

    def __init__(self, launcher: Launcher, job: JobSpec, after: Sequence[TaskHandle], is_callable: bool) -> None:
        self._launcher = launcher
        self.job = job
        self.after = list(after)
        self.is_callable = is_callable
        self.rp_task: Any = None
        self.error: str | None = None
        self._state = "PENDING"
        self._result: RunResult | None = None
        self._done = threading.Event()

    @property
    def name(self) -> str:
        """The task's name (its run id unless given)."""
        return self.job.name or self.job.run_id

    @property
    def run_dir(self) -> str:
        """Folder with every rank's stdout/stderr/exit."""
        return self.job.run_dir

    @property
    def stdout_path(self) -> str:
        """Rank 0's stdout file."""
        return f"{self.job.run_dir}/rank-0.out"

    @property
    def stderr_path(self) -> str:
        """Rank 0's stderr file."""
        return f"{self.job.run_dir}/rank-0.err"

    @property
    def state(self) -> str:
        """PENDING (waiting for dependencies), then RP's states, ending in DONE, FAILED or CANCELED."""
        if self.rp_task is not None and not self._done.is_set():
            return str(self.rp_task.state)
        return self._state

    def done(self) -> bool:
        """True once the task reached a final state."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the task to end; returns its :class:`~deeprc_launch.output.RunResult`."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"task {self.name} did not finish within {timeout}s")
        assert self._result is not None
        return self._result

    @property
    def exit_code(self) -> int | None:
        """The first failing rank's exit code (0 on success); None while running."""
        return self._result.exit_code if self._result else None

    @property
    def ok(self) -> bool:
        """True when the task finished and every rank exited 0."""
        return bool(self._result and self._result.ok)

    def result(self, timeout: float | None = None) -> Any:
        """Rank 0's return value for a callable task; the RunResult for a script. Raises on failure."""
        res = self.wait(timeout)
        if not res.ok:
            raise RuntimeError(f"task {self.name} failed: {self.error or res.summary()}")
        if self.is_callable:
            with open(Path(self.run_dir) / "result-0.pkl", "rb") as fh:
                return pickle.load(fh)
        return res

    def _finish(self, result: RunResult, error: str | None = None) -> None:
        self._result, self.error = result, error
        self._state = result.state
        self._done.set()


class Launcher:
    """One RP session and pilot that runs many tasks (context manager).

    Keyword arguments are the pilot's: ``resource`` (default: this machine), ``nodes``,
    ``cores``, ``gpus``, ``queue``, ``project``, ``walltime`` (minutes), ``keep_sandbox``.
    """

    def __init__(
        self,
        resource: str = LOCAL_RESOURCE,
        *,
        nodes: int | None = None,
        cores: int | None = None,
        gpus: int | None = None,
        queue: str | None = None,
        project: str | None = None,
        walltime: float = 60.0,
        keep_sandbox: bool = False,
        progress: Progress | None = None,
        python: str | None = None,
    ) -> None:
        self.pilot_spec = PilotSpec(resource, nodes, cores, gpus, queue, project, walltime)
        self.python = python or sys.executable
        self._session = PilotSession(self.pilot_spec, progress=progress, keep_sandbox=keep_sandbox)
        self._handles: list[TaskHandle] = []
        self._by_uid: dict[str, TaskHandle] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Launcher:
        """Start the session and pilot (blocks until the pilot is active)."""
        self._session.on_task_state(self._on_state)
        self._session.start()
        return self

    def close(self) -> None:
        """Cancel what still runs and close the session."""
        with self._lock:
            live = [h.rp_task.uid for h in self._handles if h.rp_task not in (None, _SUBMITTING) and not h.done()]
        try:
            self._session.cancel(live)
        finally:
            self._session.close()

    def __enter__(self) -> Launcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pilot_startup_s(self) -> float | None:
        """Seconds the pilot took to become active."""
        return self._session.started_s

    # ------------------------------------------------------------------ tasks
    def submit(
        self,
        target: str | Callable[..., Any],
        args: Sequence[Any] = (),
        *,
        ranks: int = 1,
        gpus_per_rank: float = 0.0,
        cores_per_rank: int = 1,
        after: Sequence[TaskHandle] = (),
        backend: str = "auto",
        framework: str = "auto",
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        name: str | None = None,
        module: bool = False,
        cwd: str | None = None,
    ) -> TaskHandle:
        """Submit a script (``.py``), module (``module=True``), executable or picklable callable.

        Every rank starts in ``cwd`` (default: this process's current folder, as under torchrun).

        The task starts once every handle in ``after`` finished successfully. A callable runs on
        every rank as ``fn(*args)``; rank 0's return value is ``handle.result()``.
        """
        run_id = new_run_id(name or "task")
        run_dir = default_run_dir(run_id)
        private_dir(Path(run_dir))
        env = dict(env or {})
        is_callable = callable(target)
        if is_callable:
            payload = Path(run_dir) / "call.pkl"
            payload.write_bytes(pickle.dumps((target, tuple(args))))
            command = [self.python, "-m", "deeprc_launch.pycall", str(payload)]
            # The function is pickled by reference: the task must import it as the client does.
            paths = [p for p in sys.path if p and os.path.isdir(p)]
            env.setdefault("PYTHONPATH", os.pathsep.join([os.getcwd(), *paths]))
        else:
            command = resolve_command(str(target), [str(a) for a in args], module=module, python=self.python)
        job = JobSpec(
            command=command,
            ranks=ranks,
            cores_per_rank=cores_per_rank,
            gpus_per_rank=gpus_per_rank,
            backend=backend,
            framework=framework,
            env=env,
            timeout=timeout,
            run_id=run_id,
            run_dir=run_dir,
            python=self.python,
            name=name,
            cwd=os.path.abspath(cwd) if cwd else os.getcwd(),
        )
        write_job_env(run_dir, run_id, env)
        handle = TaskHandle(self, job, after, is_callable)
        with self._lock:
            self._handles.append(handle)
        self._release()
        return handle

    def _release(self) -> None:
        """Submit every pending task whose dependencies are done; skip those whose dependency failed."""
        ready: list[TaskHandle] = []
        with self._lock:
            for h in self._handles:
                if h.rp_task is not None or h.done():
                    continue
                failed = [d for d in h.after if d.done() and not d.ok]
                if failed:
                    msg = f"not started: dependency {failed[0].name} failed"
                    h._finish(RunResult(1, "CANCELED", h.run_dir, h.job.ranks), msg)
                    continue
                if all(d.done() for d in h.after):
                    ready.append(h)
                    h._state = "SUBMITTING"
            if not ready:
                return
            for h in ready:
                h.rp_task = _SUBMITTING  # claimed: no other thread submits it again
        # Submit outside the lock: RP's callback threads take it in _on_state.
        tasks = self._session.submit([task_description(h.job, self.pilot_spec.resource) for h in ready])
        with self._lock:
            for h, t in zip(ready, tasks, strict=True):
                h.rp_task = t
                self._by_uid[t.uid] = h
        for h, t in zip(ready, tasks, strict=True):
            if str(t.state) in FINAL_STATES and not h.done():  # finished before we registered it
                self._complete(h, t)
        if any(str(t.state) in FINAL_STATES for t in tasks):
            self._release()

    def _on_state(self, task: Any, state: str) -> None:
        if state not in FINAL_STATES:
            return
        with self._lock:
            h = self._by_uid.get(task.uid)
        if h is not None and not h.done():
            self._complete(h, task)
            threading.Thread(target=self._release, daemon=True).start()

    def _complete(self, h: TaskHandle, task: Any) -> None:
        if h.done():
            return
        res = collect(h.run_dir, h.job.ranks, str(task.state), task.exit_code, str(task.stderr or ""))
        h._finish(res, None if res.ok else res.summary())

    def wait(self, handles: Sequence[TaskHandle] | None = None, timeout: float | None = None) -> list[RunResult]:
        """Wait for the given (default: all) tasks; returns their results in the same order."""
        todo = list(handles) if handles is not None else list(self._handles)
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for h in todo:
            while not h.done():
                self._release()  # skipped dependencies cascade without an RP event
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {h.name} did not finish within {timeout}s")
                h._done.wait(0.2 if left is None else min(0.2, left))
            results.append(h.wait())
        return results

    @property
    def tasks(self) -> list[TaskHandle]:
        """Every task submitted so far."""
        return list(self._handles)
