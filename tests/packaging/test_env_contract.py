"""The environment contract: every DEEPRC_* variable is spelt once, in deeprc_core/env_vars.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"DEEPRC_[A-Z0-9_]+")


def test_no_variable_name_is_spelt_outside_env_vars() -> None:
    """A string that is a DEEPRC_* name (not prose mentioning one) may stand only in env_vars.py."""
    declared = REPO / "deeprc_core" / "src" / "deeprc_core" / "env_vars.py"
    found = []
    for path in sorted(REPO.glob("deeprc_*/src/**/*.py")):
        if path == declared:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "use deeprc_core.env_vars instead of: " + "; ".join(found)
    spelt = set(NAME.findall(declared.read_text().split('"""', 2)[2]))  # the constants, after the docstring
    from deeprc_core import env_vars

    assert spelt == set(env_vars.ALL) and len(env_vars.ALL) == len(set(env_vars.ALL))
