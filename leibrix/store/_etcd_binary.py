"""The etcd binary: find it, read its version, refuse releases known to lose data."""

from __future__ import annotations

import re
import shutil

import trio

__all__ = [
    "EtcdBinaryError",
    "UnsafeEtcdVersion",
    "check_etcd_version",
    "find_etcd_binary",
    "is_known_bad",
    "parse_etcd_version",
]

# Known-bad releases: 3.5.0–3.5.2 lose data on SIGKILL, 3.5.0–3.5.5 on a crash
# during defrag; 3.4.20–3.4.21 carry the same defrag bug.
_BAD_RANGES = (((3, 5, 0), (3, 5, 5)), ((3, 4, 20), (3, 4, 21)))
_OLDEST_SUPPORTED = (3, 4, 0)


class EtcdBinaryError(Exception):
    """The etcd binary is missing, does not run, or its version cannot be read."""


class UnsafeEtcdVersion(EtcdBinaryError):
    """The etcd version is known to lose data (or is too old); ``allow_unsafe`` overrides."""


def parse_etcd_version(output: str) -> tuple[int, int, int]:
    """Extract ``(major, minor, patch)`` from ``etcd --version`` output."""
    match = re.search(r"etcd Version:\s*v?(\d+)\.(\d+)\.(\d+)", output)
    if not match:
        snippet = output.strip().splitlines()[0] if output.strip() else "<no output>"
        raise EtcdBinaryError(f"cannot read the etcd version from {snippet!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def is_known_bad(version: tuple[int, int, int]) -> str | None:
    """Why ``version`` must not be used, or ``None`` if it is acceptable."""
    text = ".".join(map(str, version))
    for low, high in _BAD_RANGES:
        if low <= version <= high:
            return (
                f"etcd {text} is a known-bad release (3.5.0-3.5.5 and 3.4.20-3.4.21 can lose or "
                "corrupt data on crash); install >= 3.4.22 or >= 3.5.6"
            )
    if version < _OLDEST_SUPPORTED:
        return f"etcd {text} is older than 3.4.0, which Leibrix does not support"
    return None


def find_etcd_binary(binary: str | None = None) -> str:
    """Absolute path of the etcd binary: ``binary`` if given, else ``etcd`` from ``PATH``."""
    name = binary or "etcd"
    found = shutil.which(name)
    if found is None:
        if binary:
            raise EtcdBinaryError(f"etcd binary {binary!r} not found or not executable")
        raise EtcdBinaryError(
            "etcd binary not found on PATH; install it (Debian: apt-get install etcd-server) "
            "or pass --etcd-binary, or use an external cluster with --etcd-endpoints"
        )
    return found


async def check_etcd_version(binary: str, *, allow_unsafe: bool = False) -> tuple[int, int, int]:
    """Run ``binary --version`` and refuse known-bad releases unless ``allow_unsafe``."""
    try:
        with trio.fail_after(10):
            result = await trio.run_process(
                [binary, "--version"], capture_stdout=True, capture_stderr=True, check=False
            )
    except (OSError, trio.TooSlowError) as exc:
        raise EtcdBinaryError(f"cannot run {binary} --version: {exc}") from None
    version = parse_etcd_version(result.stdout.decode(errors="replace"))
    problem = is_known_bad(version)
    if problem and not allow_unsafe:
        raise UnsafeEtcdVersion(f"{problem} (--allow-unsafe-etcd overrides)")
    return version
