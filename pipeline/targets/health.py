"""Readiness probing shared by every target: poll a URL the way the deployment's probe says."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

from pipeline.spec.model import Probe

READY_ROUTE = "/v2/health/ready"


def probe_deadline(probe: Probe) -> float:
    """Seconds a new instance gets to become ready: initial delay + period × failure threshold."""
    return probe.initial_delay + probe.period * probe.failure_threshold


def wait_ready(url: str, probe: Probe, alive: Callable[[], bool] = lambda: True) -> tuple[bool, str]:
    """Poll ``url`` until ``success_threshold`` successes in a row (True) or the deadline (False).

    ``alive`` lets the caller stop early when the process or container has already exited.
    Returns (ready, why) where ``why`` explains a failure.
    """
    deadline = time.monotonic() + probe_deadline(probe)
    time.sleep(probe.initial_delay)
    successes, last = 0, "no answer yet"
    with httpx.Client(timeout=probe.timeout) as client:
        while True:
            try:
                status = client.get(url).status_code
                successes = successes + 1 if status == 200 else 0
                last = f"readiness probe answered {status}"
            except httpx.HTTPError as error:
                successes, last = 0, f"readiness probe failed: {type(error).__name__}"
            if successes >= probe.success_threshold:
                return True, ""
            if not alive():
                return False, "the service exited before it became ready"
            if time.monotonic() >= deadline:
                return False, f"not ready after {probe_deadline(probe):g} s ({last})"
            time.sleep(min(probe.period, 0.1))  # poll fast: a ready instance should not wait


def free_port(host: str = "127.0.0.1", preferred: int | None = None) -> int:
    """``preferred`` when nobody listens there right now, else a free port the OS picks."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
        try:
            sock.bind((host, preferred or 0))
        except OSError:
            sock.bind((host, 0))
        return sock.getsockname()[1]
