"""The bubblewrap sandbox remote Python functions run in: its command line, as plain data.

`sandbox_command` builds the ``bwrap`` argv for one call. What the child gets:

- a new user, PID, network, IPC, UTS and cgroup namespace (``--unshare-all``), so it has no
  network and sees no process of the host: it cannot signal its worker; inside it is uid/gid
  65534 (nobody);
- ``--die-with-parent`` and ``--new-session``: killing bwrap kills the namespace's init, and the
  kernel then ends every process left in the namespace, detached grandchildren included;
- read-only binds of only what Python needs: /usr (and the /lib, /lib64, /bin, /sbin links or
  folders beside it), /etc/ld.so.cache, the interpreter's installation (``sys.base_prefix``),
  the venv it runs in (``sys.prefix``), the runner script and the job's dependency directory;
  a private tmpfs /tmp (its working directory; `scratch_bytes` at most) and /dev/shm
  (SHM_BYTES at most), a fresh /proc and a minimal /dev; the root and /dev are then remounted
  read-only, so nothing else is writable. Nothing else of the host exists inside: not the data
  dir, not credentials.json, not $HOME;
- an explicit environment (``--clearenv``, then `child_env`): no variable of the worker's.

Dependency installs (``pip install --target``, which may run a package's build code) run in
the same sandbox with the host's network shared and only their target directory writable, and
with `pip_env`. `find_bwrap` says where bwrap is, or None. Nothing here starts a process.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "NO_SANDBOX_ENV",
    "SANDBOX_UID",
    "child_env",
    "find_bwrap",
    "missing_bwrap_message",
    "pip_env",
    "sandbox_command",
]

SANDBOX_UID = 65534  # nobody
# The operator's explicit, loudly named opt-out (also `jetgrid worker --unsafe-python-no-sandbox`).
NO_SANDBOX_ENV = "JETGRID_UNSAFE_PYTHON_NO_SANDBOX"
RUNNER_INSIDE = "/jetgrid/pyrunner.py"
SHM_BYTES = 64 * 2**20
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl",
                  "/etc/ca-certificates", "/etc/pki")  # fmt: skip


def find_bwrap() -> str | None:
    """The path of the bwrap executable, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def missing_bwrap_message() -> str:
    return (
        "bubblewrap (bwrap) is not installed, so this worker will not run remote Python "
        "functions; install the Debian package bubblewrap (apt-get install bubblewrap), or set "
        f"{NO_SANDBOX_ENV}=1 to run them unsandboxed as the worker's own user."
    )


def child_env() -> dict[str, str]:
    """The whole environment of a function's process: nothing inherited from the worker."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def pip_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a dependency install: `child_env`, plus the operator's pip and proxy
    settings (PIP_*, HTTP(S)_PROXY, NO_PROXY and CA bundles) from `environ`, nothing else."""
    keep = {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    passed = {k: v for k, v in environ.items() if k.startswith("PIP_") or k.upper() in keep}
    return {**child_env(), **passed}


def sandbox_command(
    bwrap: str,
    runner: Path | None,
    python_args: Iterable[str],
    *,
    extra_ro: Iterable[Path] = (),
    writable: Iterable[Path] = (),
    network: bool = False,
    prefixes: Iterable[str] = (sys.base_prefix, sys.prefix),
    executable: str = sys.executable,
    env: Mapping[str, str] | None = None,
    scratch_bytes: int = 256 * 2**20,
) -> list[str]:
    """The argv that runs ``executable -I <runner> *python_args`` inside the sandbox (without a
    `runner`: ``executable -I *python_args``).

    `extra_ro` are further paths bound read-only at their own path (the job's dependency
    directory); `writable` directories bound read-write (a dependency install's target);
    `network` shares the host's network and binds its resolver and CA files (installs only);
    `prefixes` the interpreter's and the venv's installation, bound
    read-only likewise (skipped when under /usr, which is bound already); `scratch_bytes` the
    size of the writable /tmp.
    """
    args = [
        bwrap,
        "--unshare-all",
        *(["--share-net"] if network else []),
        "--die-with-parent",
        "--new-session",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        *_system_binds(),
        # first, so that binds below /tmp (a dependency dir) stay visible
        "--size", str(scratch_bytes), "--tmpfs", "/tmp",
    ]  # fmt: skip
    seen: set[str] = set()
    for prefix in [*prefixes, *(str(p) for p in extra_ro)]:
        real = os.path.realpath(prefix)
        if real in seen or real == "/usr" or real.startswith("/usr/"):
            continue
        seen.add(real)
        args += ["--ro-bind", real, real]
        if real != prefix and not prefix.startswith("/usr/"):
            args += ["--ro-bind", real, prefix]
    for folder in writable:
        args += ["--bind", str(folder), str(folder)]
    if network:
        for name in _NETWORK_FILES:
            if os.path.exists(name):
                args += ["--ro-bind", name, name]
    if runner is not None:
        args += ["--ro-bind", str(runner), RUNNER_INSIDE]
    args += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(min(SHM_BYTES, scratch_bytes)), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--chdir", "/tmp",
        "--clearenv",
    ]  # fmt: skip
    for key, value in (env if env is not None else child_env()).items():
        args += ["--setenv", key, value]
    inside = [RUNNER_INSIDE] if runner is not None else []
    return [*args, "--", executable, "-I", *inside, *python_args]
