#!/usr/bin/env python3
"""Build Cylon (C++ core + pycylon) into a cached environment outside the checkout.

    python3 tools/cylon_build.py           build if needed, then print how to use the result
    python3 tools/cylon_build.py --print   print the environment's python (exit 3 if not built)

Source, in this order: $DEEPRC_CYLON_SOURCE (a tarball), ../shared/vendor/cylon-<commit>.tar.gz beside
the checkout, else the pinned upstream commit from GitHub. The result lives in
$DEEPRC_CACHE (default ~/.cache/deeprc)/cylon-<sha256 of the source, 12 hex>/: a venv on the
Cylon-compatible stack (requirements/compat.txt: pyarrow 10.0.1, numpy < 1.25) with pycylon
installed, the C++ install tree and the build log. Later runs, and CI on the same machine, reuse it.

Cylon at this commit does not build as shipped against the pyarrow 10 wheel on Debian 12; the
patches below are applied to the unpacked copy at build time (the source is never committed):
  * glog: Debian's libgoogle-glog-dev instead of a download from GitHub at configure time;
  * C++14 -> C++17 (Arrow 10's headers use std::string_view), in CMake and in pycylon's setup.py;
  * arrow::util::string_view -> std::string_view (Arrow 10 removed the alias);
  * src/examples is skipped (saves build time; nothing here uses it).
Nothing here fakes pycylon: the build ends with a 2-rank join under mpirun that must succeed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

COMMIT = "03e0338739f20dfd7025185aee7ca1c01adcc6f7"
UPSTREAM = f"https://github.com/cylondata/cylon/archive/{COMMIT}.tar.gz"
VENDORED_NAME = f"cylon-{COMMIT[:7]}.tar.gz"
# Bump when the recipe below changes: a cache built by an older recipe is rebuilt.
RECIPE = "3"
ROOT = Path(__file__).resolve().parent.parent
# Python packages pycylon's build needs beyond the compat stack (pinned by the build facts).
BUILD_PIP = ["cython<3", "pandas<2.1", "setuptools<70", "wheel"]
SMOKE = """
import numpy as np, pyarrow as pa
from mpi4py import MPI
from pycylon import CylonEnv, Table
from pycylon.net import MPIConfig
env = CylonEnv(config=MPIConfig(), distributed=True)
r, n = env.rank, env.world_size
keys = np.arange(r, 1000, n)
left = Table.from_arrow(env.context, pa.table({"k": keys, "a": keys * 2}))
right = Table.from_arrow(env.context, pa.table({"k": keys, "b": keys * 3}))
out = left.distributed_join(right, join_type="inner", algorithm="sort", on=["k"])
total = MPI.COMM_WORLD.allreduce(out.row_count)
assert total == 1000, f"rank {r}: the 2-rank join gave {total} rows, expected 1000"
print(f"rank {r}: {out.row_count} of {total} joined rows", flush=True)
env.finalize()
"""


def say(msg: str) -> None:
    """Progress line on stderr, in the dev script's style."""
    print(f"\033[1m[deeprc cylon] {msg}\033[0m", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """Where cached Cylon environments live (DEEPRC_CACHE or ~/.cache/deeprc)."""
    return Path(os.environ.get("DEEPRC_CACHE") or Path.home() / ".cache" / "deeprc")


def built_from_pin(root: Path) -> Path | None:
    """A finished cache built from the pinned commit (for checkouts without the vendored tarball)."""
    for env_dir in sorted(root.glob("cylon-*")):
        if is_ready(env_dir) and (env_dir / "commit").is_file() and (env_dir / "commit").read_text() == COMMIT:
            return env_dir
    return None


def is_ready(env_dir: Path) -> bool:
    """Whether ``env_dir`` holds a finished build by this recipe."""
    return (env_dir / "recipe").is_file() and (env_dir / "recipe").read_text() == RECIPE


def find_source(download_to: Path, download: bool = True) -> Path | None:
    """The Cylon source tarball: the env override, the vendored copy, or a download."""
    given = os.environ.get("DEEPRC_CYLON_SOURCE")
    if given:
        path = Path(given)
        if not path.is_file():
            sys.exit(f"DEEPRC_CYLON_SOURCE={given} is not a file: point it at a Cylon source tarball")
        return path
    vendored = ROOT.parent / "shared" / "vendor" / VENDORED_NAME
    if vendored.is_file():
        return vendored
    target = download_to / f"cylon-{COMMIT}.tar.gz"
    if target.is_file():
        return target
    if not download:
        return None
    say(f"no vendored source ({vendored}); downloading {UPSTREAM}")
    download_to.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(UPSTREAM, timeout=120) as resp, open(f"{target}.part", "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        sys.exit(
            f"cannot fetch Cylon {COMMIT[:7]} from {UPSTREAM} ({exc}).\n"
            f"Download it elsewhere and set DEEPRC_CYLON_SOURCE=/path/to/the.tar.gz, "
            f"or place it at {vendored}."
        )
    os.replace(f"{target}.part", target)
    return target


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def replace_once(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace `old` exactly `count` times in `path`, or stop the build naming the patch that no longer applies."""
    text = path.read_text()
    found = text.count(old)
    if found != count:
        sys.exit(f"patch no longer applies: {path} has {found} copies of {old!r}, expected {count}")
    path.write_text(text.replace(old, new))


def patch_source(src: Path) -> None:
    """The four source changes this Cylon commit needs on Debian 12 with the pyarrow 10 wheel."""
    cmake = src / "cpp" / "CMakeLists.txt"
    replace_once(
        cmake,
        '    message("Building Glog locally")\n'
        "    include(ConfigureGlog)\n"
        '    include_directories(SYSTEM "${GLOG_INCLUDE_DIR}")\n'
        '    message(STATUS "Glog include dir: ${GLOG_INCLUDE_DIR}")\n'
        "\n"
        "    install(FILES ${GLOG_LIBRARIES} DESTINATION lib)\n"
        "    install(DIRECTORY ${GLOG_INCLUDE_DIR}/glog DESTINATION include)\n",
        '    message("Using the system glog (deeprc build: no download)")\n'
        "    find_package(glog REQUIRED)\n"
        "    set(GLOG_LIBRARIES glog::glog)\n",
    )
    replace_once(cmake, "set(CMAKE_CXX_STANDARD 14)", "set(CMAKE_CXX_STANDARD 17)")
    replace_once(cmake, "add_subdirectory(src/examples)\n", "# add_subdirectory(src/examples)  (skipped by deeprc)\n")
    replace_once(src / "python" / "pycylon" / "setup.py", "std_version = '-std=c++14'", "std_version = '-std=c++17'")
    touched = 0
    for path in sorted((src / "cpp").rglob("*")):
        if path.suffix in {".cpp", ".hpp", ".h"} and "arrow::util::string_view" in path.read_text(errors="replace"):
            path.write_text(path.read_text().replace("arrow::util::string_view", "std::string_view"))
            touched += 1
    if touched != 7:
        sys.exit(f"patch no longer applies: expected 7 files using arrow::util::string_view, found {touched}")


class Log:
    """Runs build steps with their output appended to one log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def run(self, what: str, cmd: list[str], **kw: object) -> None:
        """Run `cmd`, logging it; stop with the log's tail when it fails."""
        say(f"{what} ...")
        t0 = time.monotonic()
        with open(self.path, "a") as log:
            log.write(f"\n### {what}\n$ {' '.join(cmd)}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
        if rc != 0:
            tail = self.path.read_text().splitlines()[-40:]
            print("\n".join(tail), file=sys.stderr)
            sys.exit(f"{what} failed (exit {rc}); full log: {self.path}")
        say(f"{what}: done in {time.monotonic() - t0:.0f} s")


#: What the C++ build needs from the system: (how to detect it, Debian package).
SYSTEM_NEEDS = [
    (lambda: Path("/usr/include/glog/logging.h").exists(), "libgoogle-glog-dev"),
    (lambda: shutil.which("cmake") is not None, "cmake"),
    (lambda: shutil.which("c++") is not None, "g++"),
    (lambda: shutil.which("make") is not None, "make"),
    (lambda: shutil.which("mpicc") is not None, "libopenmpi-dev"),
    (lambda: shutil.which("mpirun") is not None, "openmpi-bin"),
]


def need_system() -> None:
    """Install the missing Debian packages the build needs (as root), or say which to install."""
    missing = [pkg for present, pkg in SYSTEM_NEEDS if not present()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"missing system packages: {' '.join(missing)}; install them first (e.g. apt-get install -y ...)")
    say(f"installing system packages: {' '.join(missing)} (apt-get)")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([*apt, "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*apt, "install", "-y", "-qq", *missing], check=True, stdout=subprocess.DEVNULL, env=env)


def build(env_dir: Path, tarball: Path, jobs: int) -> None:
    """Unpack, patch, build the C++ core and pycylon into `env_dir`, then smoke-test on 2 ranks."""
    work = env_dir / "build"
    prefix = env_dir / "install"
    venv = env_dir / "venv"
    unpacked = work / f"unpacked-recipe-{RECIPE}"
    if not unpacked.exists() and env_dir.exists():  # a partial build by another recipe: start afresh
        shutil.rmtree(env_dir)
    log = Log(env_dir / "build.log")
    say(f"building Cylon {COMMIT[:7]} into {env_dir} (12-25 min on 2 idle cores); log: {log.path}")
    if unpacked.exists():
        say("resuming an interrupted build (the compiled objects are reused)")
    else:
        work.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(work)
            # git archive (and GitHub's archives) record the commit in the global pax header
            (work / "commit").write_text(str(tar.pax_headers.get("comment", "")))
        (src_dir,) = [p for p in work.iterdir() if p.is_dir()]
        if (work / "commit").read_text() != COMMIT:
            say(
                f"note: this source is commit {(work / 'commit').read_text() or '(unknown)'}, not the pinned {COMMIT[:7]}"
            )
        patch_source(src_dir)
        unpacked.write_text(src_dir.name)
    src = work / unpacked.read_text()
    commit = (work / "commit").read_text() if (work / "commit").is_file() else ""
    py = str(venv / "bin" / "python")
    log.run("creating the venv (compat stack + build tools)", [sys.executable, "-m", "venv", str(venv)])
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    log.run("pip install", [*pip, "-r", str(ROOT / "requirements" / "compat.txt"), *BUILD_PIP])
    pa_dir = subprocess.check_output(
        [py, "-c", "import pyarrow as pa, os; pa.create_library_symlinks(); print(os.path.dirname(pa.__file__))"],
        text=True,
    ).strip()
    build_env = dict(
        os.environ, LD_LIBRARY_PATH=f"{pa_dir}:{prefix / 'lib'}", PATH=f"{venv / 'bin'}:{os.environ['PATH']}"
    )
    cpp_build = work / "cpp-build"
    cpp_build.mkdir(exist_ok=True)
    log.run(
        "configuring the C++ core (cmake)",
        [
            "cmake",
            str(src / "cpp"),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            "-DARROW_BUILD_TYPE=CUSTOM",
            f"-DARROW_LIB_DIR={pa_dir}",
            f"-DARROW_INCLUDE_DIR={pa_dir}/include",
            "-DPYCYLON_BUILD=ON",
            "-DCYLON_WITH_TEST=OFF",
            f"-DPython3_EXECUTABLE={py}",
        ],
        cwd=cpp_build,
        env=build_env,
    )
    log.run(
        f"compiling the C++ core (make -j{jobs}; the long step)",
        ["make", f"-j{jobs}", "install"],
        cwd=cpp_build,
        env=build_env,
    )
    pysrc = src / "python" / "pycylon"
    py_env = dict(build_env, CYLON_PREFIX=str(prefix), PARALLEL_LEVEL=str(jobs))
    log.run("compiling pycylon (cython + c++)", [py, "setup.py", "build_ext", f"-j{jobs}"], cwd=pysrc, env=py_env)
    log.run("installing pycylon", [*pip, "--no-build-isolation", "--no-deps", "."], cwd=pysrc, env=py_env)
    (env_dir / "env.sh").write_text(env_script(env_dir, pa_dir))
    smoke = env_dir / "smoke.py"
    smoke.write_text(SMOKE)
    run_env = dict(os.environ, LD_LIBRARY_PATH=f"{pa_dir}:{prefix / 'lib'}", **MPI_ROOT_ENV)
    log.run("smoke test: a 2-rank distributed join under mpirun", ["mpirun", "-n", "2", py, str(smoke)], env=run_env)
    shutil.rmtree(work)
    (env_dir / "commit").write_text(commit)
    (env_dir / "recipe").write_text(RECIPE)


MPI_ROOT_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def env_script(env_dir: Path, pa_dir: str) -> str:
    """A sourceable script that makes the cached pycylon importable."""
    return (
        f"# source me: puts the cached pycylon first on PATH and its libraries on LD_LIBRARY_PATH\n"
        f"export DEEPRC_CYLON_ENV={env_dir}\n"
        f'export PATH={env_dir / "venv" / "bin"}:"$PATH"\n'
        f"export LD_LIBRARY_PATH={pa_dir}:{env_dir / 'install' / 'lib'}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"
    )


def main() -> int:
    """Build (or find) the cached Cylon environment and say how to use it."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--print", action="store_true", help="print the cached env's folder if built (exit 3 if not)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    root = cache_root()
    pinned = (
        None
        if os.environ.get("DEEPRC_CYLON_SOURCE") or (ROOT.parent / "shared" / "vendor" / VENDORED_NAME).is_file()
        else built_from_pin(root)
    )
    if pinned is not None:  # no source here, but the pinned commit is built already: no download needed
        tarball, env_dir = Path(f"cylon-{COMMIT[:7]} (cached build)"), pinned
    else:
        found = find_source(root / "downloads", download=not args.print)
        if found is None:  # --print, and nothing local to look up
            return 3
        tarball, env_dir = found, root / f"cylon-{sha256(found)[:12]}"
    ready = is_ready(env_dir)
    if args.print:
        if not ready:
            return 3
        print(env_dir)
        return 0
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{env_dir.name}.lock", "w") as lock:
        if not ready:
            say(f"waiting for the build lock {lock.name} (another build may be running)")
            fcntl.flock(lock, fcntl.LOCK_EX)
            ready = is_ready(env_dir)
            if not ready:
                need_system()
                build(env_dir, tarball, args.jobs)
    say(f"pycylon ready in {env_dir} (source {tarball.name})")
    say(f"use it:  source {env_dir / 'env.sh'}  then run mpirun -n 2 python your_script.py")
    say(f"         or ./dev test (runs the real-Cylon tier with it); build log: {env_dir / 'build.log'}")
    print(env_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
