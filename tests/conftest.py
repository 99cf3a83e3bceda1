"""Fixtures every test folder shares."""

from __future__ import annotations

import os

import pytest


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
