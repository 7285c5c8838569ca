"""Import a distribution's every module while some top-level packages are forbidden.

``python blocked_imports.py PACKAGE FORBIDDEN[,FORBIDDEN...]`` exits 0 when PACKAGE and
all its submodules import without touching any forbidden package; otherwise it prints
which module pulled which forbidden import and exits 1.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
import traceback


class Blocker(importlib.abc.MetaPathFinder):
    """Refuse imports of the forbidden top-level packages."""

    def __init__(self, forbidden: set[str]) -> None:
        self.forbidden = forbidden

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.split(".")[0] in self.forbidden:
            raise ImportError(f"forbidden import of {fullname!r}")
        return None


def main() -> int:
    package, forbidden = sys.argv[1], set(sys.argv[2].split(","))
    # Only the top-level name decides, so pre-imported stdlib modules stay usable.
    for name in list(sys.modules):
        if name.split(".")[0] in forbidden:
            del sys.modules[name]
    sys.meta_path.insert(0, Blocker(forbidden))
    # Probes such as importlib.util.find_spec("tensorflow") (torch does this) must see the
    # package as absent, not as an error: answer them like an environment without it.
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        if name.split(".")[0] in forbidden:
            return None
        return real_find_spec(name, package)

    importlib.util.find_spec = find_spec  # type: ignore[assignment]
    root = importlib.import_module(package)
    failures = []
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if info.name.endswith(".__main__"):  # importing it would run the program
            continue
        try:
            importlib.import_module(info.name)
        except Exception:
            failures.append((info.name, traceback.format_exc(limit=3)))
    for name, tb in failures:
        print(f"{name}:\n{tb}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
