"""The ``cluster`` fixture: one simulated SLURM cluster (head + 2 nodes) shared by the cluster tests.

Skipped with a one-line reason where it cannot be built (not root, no namespaces, no
SLURM). Torn down at the end of the session even when tests failed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, unavailable_reason


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A running simulated cluster: ``cluster.run("node1", [...])`` runs a command on node1."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    c = Cluster(nodes=2).up()
    try:
        yield c
    finally:
        problems = c.down()
        assert not problems, problems
