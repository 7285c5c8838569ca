"""--resource-config: a user's RP resource config for a cluster RP does not know (offline: --dry-run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deeprc_launch.cli import main
from deeprc_launch.resources import install_resource_config, resource_info, user_config_dir

CONFIG = {
    "mycluster": {
        "description": "a SLURM cluster",
        "schemas": {"local": {"job_manager_endpoint": "slurm://localhost/"}},
        "default_queue": "batch",
        "resource_manager": "SLURM",
        "launch_methods": {"order": ["SRUN"], "SRUN": {}},
        "cores_per_node": 8,
        "gpus_per_node": 0,
    }
}


def test_installed_where_rp_reads_and_described(tmp_path: Path, deeprc_home: Path) -> None:
    path = tmp_path / "resource_site1.json"
    path.write_text(json.dumps(CONFIG))
    assert install_resource_config(path) == "site1.mycluster"
    assert json.loads((user_config_dir() / "resource_site1.json").read_text()) == CONFIG
    info = resource_info("site1.mycluster")
    assert info is not None and info.cores_per_node == 8 and info.launch_methods == ("SRUN",)


def test_dry_run_with_a_resource_config(tmp_path: Path, deeprc_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(CONFIG))
    rc = main(["--dry-run", "--resource-config", str(path), "--nodes", "2", "--ranks-per-node", "2", "train.py"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pilot_description"]["resource"] == "cluster.mycluster" and out["pilot_description"]["nodes"] == 2
    envs = out["rank_environments"]
    assert [e["DEEPRC_NODE_RANK"] for e in envs] == ["0", "0", "1", "1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"a": {"schemas": {}}}', "lacks 'resource_manager'"),
        ('{"a": {"resource_manager": "SLURM", "schemas": {}}, "b": {}}', "choose one with --resource"),
        ("[1]", "RP's format"),
    ],
)
def test_bad_configs_are_named(tmp_path: Path, deeprc_home: Path, text: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        install_resource_config(path)
    with pytest.raises(ValueError, match="cannot read"):
        install_resource_config(tmp_path / "missing.json")


def test_up_rejects_a_bad_config_before_starting_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deeprc_launch.service import service_main

    home = tmp_path / "home"  # its own DEEPRC_HOME: the session's may hold a running pilot service
    monkeypatch.setenv("DEEPRC_HOME", str(home))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert service_main(["up", "--resource-config", str(bad)]) == 2
    assert not (home / "service" / "state.json").exists() and not (home / "service" / "service.log").exists()


@pytest.mark.launcher
@pytest.mark.slow
def test_up_submits_its_pilot_to_the_configured_resource(tmp_path: Path) -> None:
    """`up --resource-config` (issue 15's gap): the service's pilot goes to the user's resource.

    No SLURM controller runs here, so the pilot fails after its submission; the log shows where it went
    and that nothing is left behind.
    """
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(CONFIG))
    up = subprocess.run(
        [sys.executable, "-m", "deeprc_launch", "up", "--resource-config", str(path), "--timeout", "120"],
        env={**os.environ, "DEEPRC_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "resource cluster.mycluster" in up.stderr and "pilot submitted to cluster.mycluster" in up.stderr, up.stderr
    assert up.returncode == 1 and "pilot service failed to start" in up.stderr, up.stderr
    assert not (home / "service" / "state.json").exists()
