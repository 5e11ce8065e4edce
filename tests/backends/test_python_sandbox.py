"""Remote Python functions run in a bubblewrap sandbox: what a hostile function cannot do."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

import jetgrid
from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError
from jetgrid.worker.backends import EchoBackend
from jetgrid.worker.backends.python import PythonBackend, WithPython
from jetgrid.worker.sandbox import NO_SANDBOX_ENV, pip_env, sandbox_command
from tests.helpers import spawn_worker, until

pytestmark = pytest.mark.integration


def python_backend(data_dir: Path, **kw) -> WithPython:
    return WithPython(EchoBackend(), PythonBackend(data_dir, **kw))


async def test_the_child_inherits_no_environment(
    streams: Settings, start_worker, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("JETGRID_NATS_PASSWORD", "hunter2-worker-secret")

    @jetgrid.remote(settings=streams)
    def environment():
        import os

        return dict(os.environ)

    await start_worker("python", backend=python_backend(tmp_path / "data"))
    env = await environment()
    assert "JETGRID_NATS_PASSWORD" not in env
    assert not any("hunter2" in v for v in env.values())
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
                        "PYTHONUNBUFFERED", "LC_CTYPE", "PWD"}  # fmt: skip


async def test_the_child_sees_neither_the_data_dir_nor_the_credentials(
    streams: Settings, start_worker, tmp_path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    creds = data / "credentials.json"
    creds.write_text('{"admin": {"password": "admin-secret"}}')

    @jetgrid.remote(settings=streams)
    def snoop(path, folder):
        import os

        try:
            with open(path) as f:
                return f.read()
        except OSError as exc:
            return {"error": type(exc).__name__, "folder": os.path.exists(folder)}

    await start_worker("python", backend=python_backend(data))
    seen = await snoop(str(creds), str(data))
    assert seen == {"error": "FileNotFoundError", "folder": False}

    @jetgrid.remote(settings=streams)
    def whoami():
        import os
        import socket

        try:
            socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
            net = "reached"
        except OSError:
            net = "no network"
        return os.getuid(), os.getgid(), net

    assert await whoami() == (65534, 65534, "no network")


async def test_only_a_bounded_scratch_space_is_writable(
    streams: Settings, start_worker, tmp_path
) -> None:
    @jetgrid.remote(settings=streams, memory_mb=64)
    def scribble():
        import errno
        import os

        def write(path, size):
            try:
                with open(path, "wb") as f:
                    for _ in range(size // 2**20):
                        f.write(b"z" * 2**20)
                return "written"
            except OSError as exc:
                return errno.errorcode[exc.errno]
            finally:
                if os.path.exists(path):
                    os.remove(path)

        return {
            "small /tmp": write("/tmp/jetgrid-probe-small", 2**20),
            "big /tmp": write("/tmp/jetgrid-probe-big", 96 * 2**20),
            "big /dev/shm": write("/dev/shm/jetgrid-probe", 96 * 2**20),
            "/": write("/jetgrid-probe", 2**20),
            "/dev": write("/dev/jetgrid-probe", 2**20),
        }

    await start_worker("python", backend=python_backend(tmp_path / "data"))
    assert await scribble() == {
        "small /tmp": "written",
        "big /tmp": "ENOSPC",  # /tmp holds the call's memory_mb at most
        "big /dev/shm": "ENOSPC",
        "/": "EROFS",
        "/dev": "EROFS",
    }


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


async def test_a_detached_grandchild_does_not_outlive_the_time_limit(
    streams: Settings, start_worker, tmp_path
) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.5"  # a unique `sleep` argument

    @jetgrid.remote(settings=streams, timeout_s=2)
    def escape(marker):
        import os
        import time

        if os.fork() == 0:  # double fork and a new session: detached from the runner
            os.setsid()
            if os.fork() == 0:
                os.execv("/usr/bin/sleep", ["sleep", marker])
            os._exit(0)
        time.sleep(3600)

    await start_worker("python", backend=python_backend(tmp_path / "data"))
    try:
        with pytest.raises(jetgrid.RemoteJobFailed) as err:
            await escape(marker)
        assert err.value.error_type == "timeout"
        # The kernel ends the namespace right after bwrap is killed; this only waits for that.
        await until(lambda: not _processes_with(marker), timeout=10)
    finally:
        for pid in _processes_with(marker):  # leave nothing behind on failure
            os.kill(pid, signal.SIGKILL)


async def test_a_function_cannot_kill_its_worker(streams: Settings, nc, tmp_path) -> None:
    @jetgrid.remote(settings=streams, timeout_s=20)
    def assassin():
        import contextlib
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.kill(os.getppid(), signal.SIGKILL)
        # kill -9 -1 only where the function sees just its own sandbox (a few processes), so
        # that this test never signals the host's processes. With nothing else in its
        # namespace but its init, there is no process to signal (ProcessLookupError).
        if len([p for p in os.listdir("/proc") if p.isdigit()]) < 5:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        return "still here"

    worker = await spawn_worker(
        streams, "py-victim", "--allow-python", JETGRID_DATA_DIR=str(tmp_path / "data")
    )
    try:
        assert await asyncio.wait_for(assassin(), 60) == "still here"
        assert await asyncio.wait_for(assassin(), 60) == "still here"  # a second one too
        assert worker.returncode is None
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        out, _ = await worker.communicate()
    assert worker.returncode == 0, out.decode()[-2000:]


async def test_big_output_and_results_are_refused_clearly(
    streams: Settings, start_worker, tmp_path
) -> None:
    @jetgrid.remote(settings=streams)
    def chatty():
        import sys

        for _ in range(64):
            sys.stdout.write("x" * 65536)

    @jetgrid.remote(settings=streams)
    def bulky():
        return b"y" * (2 * 2**20)

    @jetgrid.remote(settings=streams, memory_mb=256)
    def greedy():
        return len(bytearray(2 * 2**30))

    backend = python_backend(tmp_path / "data", output_limit=2**20, result_limit=2**20)
    await start_worker("python", backend=backend)
    with pytest.raises(jetgrid.RemoteJobFailed) as out:
        await chatty()
    assert out.value.error_type == "output_limit"
    assert "'chatty' wrote to stdout more than 1 MiB, the worker's limit; print less" in (
        out.value.reason
    )
    with pytest.raises(jetgrid.RemoteJobFailed) as res:
        await bulky()
    assert res.value.error_type == "output_limit" and "'bulky' returned more than 1 MiB" in (
        res.value.reason
    )
    with pytest.raises(jetgrid.RemoteError) as mem:
        await greedy()
    assert mem.value.type == "MemoryError"
    assert "ran out of its memory limit of 256 MiB; ask for more with memory_mb" in (
        mem.value.message
    )


def test_without_bwrap_remote_python_is_refused_unless_the_operator_opts_out(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(ConfigError) as err:
        PythonBackend(tmp_path / "data")
    assert str(err.value) == (
        "bubblewrap (bwrap) is not installed, so this worker will not run remote Python "
        "functions; install the Debian package bubblewrap (apt-get install bubblewrap), or set "
        f"{NO_SANDBOX_ENV}=1 to run them unsandboxed as the worker's own user."
    )
    assert PythonBackend(tmp_path / "data", unsandboxed=True).bwrap is None


def test_the_sandbox_binds_only_what_python_needs(tmp_path) -> None:
    deps = tmp_path / "data" / "python-envs" / "abc"
    argv = sandbox_command(
        "/usr/bin/bwrap", Path("/opt/jg/pyrunner.py"), ["3"], extra_ro=[deps],
        prefixes=["/opt/py", "/srv/venv"], executable="/srv/venv/bin/python",
    )  # fmt: skip
    assert argv[:6] == ["/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
                        "--new-session", "--uid", "65534"]  # fmt: skip
    assert argv[-5:] == ["--", "/srv/venv/bin/python", "-I", "/jetgrid/pyrunner.py", "3"]
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert "--bind" not in argv  # nothing of the host is writable
    assert {"/opt/py", "/srv/venv", str(deps), "/opt/jg/pyrunner.py"} <= set(binds)
    assert not any(b == str(tmp_path / "data") or b.startswith(str(Path.home())) for b in binds)
    assert "--clearenv" in argv and argv.index("--tmpfs") < argv.index(str(deps))


def test_a_worker_without_bwrap_refuses_to_start_with_one_sentence(tmp_path) -> None:
    import subprocess

    from tests.helpers.procs import JETGRID

    env = {k: v for k, v in os.environ.items() if not k.startswith("JETGRID_")}
    env["PATH"] = str(tmp_path)  # no bwrap on it
    done = subprocess.run(
        [JETGRID, "worker", "--pool", "standard", "--allow-python"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: bubblewrap (bwrap) is not installed, so this worker will not run remote Python "
        "functions; install the Debian package bubblewrap (apt-get install bubblewrap), or set "
        f"{NO_SANDBOX_ENV}=1 to run them unsandboxed as the worker's own user."
    ]


def spying_sdist(where: Path, creds: Path) -> None:
    """An sdist whose build code records what it could see into the module it installs."""
    import io
    import tarfile

    setup = f"""
import os
from setuptools import setup

try:
    with open({str(creds)!r}) as f:
        creds = f.read()
except OSError as exc:
    creds = type(exc).__name__
with open("jgspy.py", "w") as f:
    f.write("FOUND = " + repr({{"env": os.environ.get("JETGRID_NATS_PASSWORD"), "creds": creds}}))
setup(name="jgspy", version="1.0", py_modules=["jgspy"])
"""
    pkg_info = "Metadata-Version: 2.1\nName: jgspy\nVersion: 1.0\n"
    with tarfile.open(where / "jgspy-1.0.tar.gz", "w:gz") as tar:
        for name, text in (("setup.py", setup), ("PKG-INFO", pkg_info)):
            data = text.encode()
            info = tarfile.TarInfo(f"jgspy-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


async def test_a_dependency_build_sees_no_secret_either(
    streams: Settings, start_worker, tmp_path, monkeypatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    creds = data / "credentials.json"
    creds.write_text('{"admin": {"password": "admin-secret"}}')
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    spying_sdist(wheels, creds)
    monkeypatch.setenv("JETGRID_NATS_PASSWORD", "hunter2-worker-secret")

    @jetgrid.remote(settings=streams, dependencies=["jgspy==1.0"])
    def found():
        import jgspy

        return jgspy.FOUND

    pip_args = ("--no-index", "--no-deps", "--no-build-isolation", "--find-links", str(wheels))
    await start_worker("python", backend=python_backend(data, pip_args=pip_args))
    assert await found() == {"env": None, "creds": "FileNotFoundError"}


def test_an_install_gets_the_network_its_target_and_the_operators_pip_settings(tmp_path) -> None:
    target = tmp_path / "data" / "python-envs" / ".abc-x"
    argv = sandbox_command(
        "/usr/bin/bwrap", None, ["-m", "pip", "install", "x"], writable=[target], network=True,
        prefixes=["/opt/py"], executable="/opt/py/bin/python",
    )  # fmt: skip
    assert "--share-net" in argv
    assert argv[argv.index("--") :] == [
        "--",
        "/opt/py/bin/python",
        "-I",
        "-m",
        "pip",
        "install",
        "x",
    ]
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert writable == [str(target)] and "/jetgrid/pyrunner.py" not in argv
    env = pip_env(
        {
            "PIP_INDEX_URL": "https://pypi.example/simple",
            "https_proxy": "http://p:3128",
            "JETGRID_NATS_PASSWORD": "s",
            "AWS_SECRET_ACCESS_KEY": "s",
            "HOME": "/root",
        }
    )
    assert env["PIP_INDEX_URL"] == "https://pypi.example/simple"
    assert env["https_proxy"] == "http://p:3128" and env["HOME"] == "/tmp"
    assert not {"JETGRID_NATS_PASSWORD", "AWS_SECRET_ACCESS_KEY"} & set(env)
