"""Fixtures every test folder shares."""

from __future__ import annotations

import os

import pytest

# mlops refuses to apply local state under CI=true; the tests run mlops as a developer would on a
# machine of their own, and say explicitly when they test CI behaviour. Whether the suite runs in CI
# (tools that must exist there) is kept apart.
IN_CI = bool(os.environ.pop("CI", ""))
if IN_CI:
    os.environ["MLOPS_TESTS_IN_CI"] = "1"


@pytest.fixture(scope="session")
def docker_engine():
    """A client of the Docker engine (``DOCKER_HOST``): skipped without one, failed when CI requires it."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception:
        if os.environ.get("MLOPS_REQUIRE_DOCKER") == "1":
            pytest.fail("no Docker engine reachable, but MLOPS_REQUIRE_DOCKER=1 (CI starts one: .ci/docker.sh)")
        pytest.skip("no Docker engine reachable (set DOCKER_HOST)")


@pytest.fixture(scope="session")
def wait_http():
    """A function that waits until a URL answers anything over HTTP (a process has started serving)."""
    import time

    import httpx

    def wait(url: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(url)

    return wait


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on loopback (SQLite backend store, served artifacts), for the whole
    session; yields its tracking URI. Tests isolate themselves by the names they create."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not answer on {uri}")
            time.sleep(0.2)
        yield uri
    finally:
        import signal

        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
