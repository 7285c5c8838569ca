"""The data ships in the repo: checksums, size budget, one lookup, and a clone with nothing beside it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from examples import shipped_data
from examples.shipped_data import REPO_DATA, data_path, data_roots

REPO = Path(__file__).resolve().parents[1]
#: the budget the issue gave for shipped data
BUDGET_BYTES = 15 * 1024 * 1024


def _sums() -> dict[str, str]:
    lines = (REPO_DATA / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (ln.split(None, 1) for ln in lines if ln.strip())}


def test_every_shipped_file_matches_its_sha256_and_is_listed() -> None:
    sums = _sums()
    files = {
        p.relative_to(REPO_DATA).as_posix()
        for p in REPO_DATA.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "README.md")
    }
    assert files == set(sums), "data/SHA256SUMS must list exactly the shipped files"
    for name, digest in sums.items():
        assert hashlib.sha256((REPO_DATA / name).read_bytes()).hexdigest() == digest, name
    total = sum((REPO_DATA / n).stat().st_size for n in sums)
    assert total <= BUDGET_BYTES, f"shipped data is {total / 2**20:.1f} MiB, over the 15 MiB budget"


def test_lookup_prefers_deeprc_data_then_falls_back_to_the_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ett").mkdir()
    (tmp_path / "ett" / "ETTh1.csv").write_text("date,OT\n")
    monkeypatch.setenv(shipped_data.ENV, str(tmp_path))
    assert data_roots() == [tmp_path, REPO_DATA]
    assert data_path("ett", "ETTh1.csv") == tmp_path / "ett" / "ETTh1.csv"
    # a file the override lacks comes from the repo's copy
    assert data_path("camels_us", "nh_test_subset") == REPO_DATA / "camels_us" / "nh_test_subset"
    with pytest.raises(FileNotFoundError, match=r"ett/ETTm1.csv not found .*set DEEPRC_DATA"):
        data_path("ett", "ETTm1.csv")
    monkeypatch.delenv(shipped_data.ENV)
    assert data_path("ett", "ETTh1.csv") == REPO_DATA / "ett" / "ETTh1.csv"


def test_no_code_reads_the_shared_folder_beside_the_checkout() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in tracked:
        if name.endswith((".py", ".md", ".sh", ".toml")) or name in ("dev", ".ci/run"):
            text = (REPO / name).read_text(errors="replace")
            if "shared/data" in text or '"shared" / "data"' in text:
                offenders.append(name)
    offenders = [n for n in offenders if n != "tests/test_shipped_data.py"]
    assert offenders == [], f"these files still read ../shared/data: {offenders}"


@pytest.mark.slow
def test_a_copy_with_nothing_beside_it_finds_the_demo_data(tmp_path: Path) -> None:
    """Copy the tracked files into an empty folder (no sibling ``shared/``) and prepare both pipelines there."""
    clone = tmp_path / "alone" / "deeprc"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    untracked_data = [p.relative_to(REPO).as_posix() for p in REPO_DATA.rglob("*") if p.is_file()]
    for name in {*tracked, *untracked_data, "examples/shipped_data.py"}:
        src = REPO / name
        if src.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / name)
    assert not (clone.parent / "shared").exists()
    probe = (
        "from examples.pipelines.ett_data import EttConfig, prepare_ett\n"
        "from examples.pipelines.camels_data import CamelsConfig, prepare_camels\n"
        "ett = EttConfig()\n"
        "s = prepare_ett(ett)\n"
        "c = prepare_camels(CamelsConfig(seq_len=30))\n"
        "print(ett.path)\n"
        "print(CamelsConfig().forcing_file('01013500'))\n"
        "print(s.train.num_rows, c.joined_rows)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != shipped_data.ENV}
    env["PYTHONPATH"] = str(clone)
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=clone, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ett_path, camels_path, counts = out.stdout.strip().splitlines()[-3:]
    assert Path(ett_path) == clone / "data" / "ett" / "ETTh1.csv"
    assert Path(camels_path).is_relative_to(clone / "data" / "camels_us" / "full_record_subset")
    train_rows, joined = map(int, counts.split())
    assert train_rows > 0 and joined == 3 * 12784  # 3 basins x 1980-2014 (every day joined)
    # an example run as a file (the way launchers exec it) finds the copy's data too
    script = subprocess.run(
        [sys.executable, str(clone / "examples" / "core_etth1.py")],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert script.returncode == 0, script.stderr[-3000:]
    assert "17420 rows" in script.stdout
