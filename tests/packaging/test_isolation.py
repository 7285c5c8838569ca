"""Installing one adapter never pulls the other framework; the launcher pulls neither.

Two checks: (1) walk the dependency graph that pip actually resolved (the installed
distributions' Requires-Dist metadata) from each of our distributions and assert the
forbidden ones are unreachable; (2) import every module of each distribution with
the forbidden packages blocked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TF = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tensorflow-intel", "tensorflow-io-gcs-filesystem"}
TORCH = {"torch", "lightning", "pytorch-lightning", "torchvision", "torchmetrics"}

CASES = {
    "deeprc-torch": TF | {"deeprc-tf", "deeprc-launch"},
    "deeprc-tf": TORCH | {"deeprc-torch", "deeprc-launch"},
    "deeprc-launch": TF | TORCH | {"deeprc-torch", "deeprc-tf"},
    "deeprc-core": TF | TORCH | {"radical-pilot", "deeprc-torch", "deeprc-tf", "deeprc-launch"},
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(root: str) -> set[str]:
    """Every installed distribution reachable from ``root`` through non-extra requirements."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for req in reqs:
            if "extra ==" in req:
                continue
            marker_ok = True
            if ";" in req:
                from packaging.markers import Marker

                marker_ok = Marker(req.split(";", 1)[1]).evaluate()
            if marker_ok:
                todo.append(re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0])
    return seen


@pytest.mark.parametrize("dist", sorted(CASES))
def test_dependency_closure_excludes_other_frameworks(dist: str) -> None:
    try:
        distribution(dist)
    except PackageNotFoundError:
        pytest.skip(f"{dist} is not installed in this environment")
    reachable = _closure(dist)
    bad = sorted(reachable & {_norm(f) for f in CASES[dist]})
    assert not bad, f"installing {dist} pulls {bad}"


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("deeprc_torch", "tensorflow,keras,deeprc_tf,deeprc_launch,radical"),
        ("deeprc_tf", "torch,lightning,pytorch_lightning,deeprc_torch,deeprc_launch,radical"),
        ("deeprc_launch", "torch,lightning,pytorch_lightning,tensorflow,keras,deeprc_torch,deeprc_tf"),
    ],
)
def test_modules_import_without_the_other_framework(package: str, forbidden: str) -> None:
    pytest.importorskip(package)
    proc = subprocess.run(
        [sys.executable, str(HERE / "blocked_imports.py"), package, forbidden], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tf_declares_tensorflow_and_keras_not_torch() -> None:
    from importlib.metadata import requires

    try:
        reqs = requires("deeprc-tf") or []
    except PackageNotFoundError:
        pytest.skip("deeprc-tf is not installed")
    names = {_norm(re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]) for r in reqs if "extra ==" not in r}
    assert {"tensorflow", "keras", "deeprc-core"} <= names
    assert not names & {_norm(t) for t in TORCH}
