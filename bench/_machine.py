"""What the header of docs/benchmarks.md says about the machine and the software measured."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from bench._nginx import nginx_version

# Everything the benchmarks measure or depend on, in the order the header lists them.
PACKAGES = (
    "microcall",
    "aiohttp",
    "requests",
    "requests-futures",
    "aio-request",
    "uvloop",
    "httpx",
)

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def core_count() -> str:
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0))
    return f"{total}" if usable == total else f"{total} ({usable} usable by this process)"


def package_versions() -> list[tuple[str, str]]:
    found = []
    for name in PACKAGES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, "not installed"))
    try:
        found.append(("nginx", nginx_version()))
    except RuntimeError:
        found.append(("nginx", "not installed"))
    return found


def source_revision() -> str:
    """The commit measured, and whether src/ had changes on top of it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes in src/)" if dirty else head


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
