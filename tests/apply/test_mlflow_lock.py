"""The state lock on a real MLflow server: one holder at a time, named when waited for, dead holders taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pipeline.apply.lock import Lock, StateLock
from pipeline.apply.mlflow_lock import MlflowLock
from pipeline.errors import LockError


def _key() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_both_locks_satisfy_the_protocol(mlflow_server, tmp_path):
    assert isinstance(MlflowLock(mlflow_server, _key()), Lock) and isinstance(StateLock(tmp_path), Lock)


def test_second_holder_waits_then_fails_naming_the_first(mlflow_server):
    key = _key()
    first = MlflowLock(mlflow_server, key).acquire()
    assert first.holder()["id"] == first.id and first.holder()["pid"] == os.getpid()
    started = time.monotonic()
    with pytest.raises(LockError) as raised:
        MlflowLock(mlflow_server, key).acquire(timeout=0.6)
    assert time.monotonic() - started >= 0.6
    message = str(raised.value)
    holder = first.holder()
    assert f"lock id {first.id}" in message and f"{holder['user']}@{holder['host']}" in message
    assert f"since {holder['created']}" in message and "waited 0.6 s" in message
    first.release()
    assert first.holder() is None
    MlflowLock(mlflow_server, key).acquire(timeout=0).release()


def test_a_waiter_gets_the_lock_once_it_is_released(mlflow_server):
    key = _key()
    first = MlflowLock(mlflow_server, key).acquire()
    threading.Timer(0.7, first.release).start()
    started = time.monotonic()
    with MlflowLock(mlflow_server, key).acquire(timeout=10) as second:
        assert 0.6 < time.monotonic() - started < 5
        assert second.holder()["id"] == second.id != first.id
    assert second.holder() is None


def test_racing_processes_never_hold_it_together(mlflow_server, tmp_path):
    key, log, go = _key(), tmp_path / "holders.log", tmp_path / "go"
    racer = ("import os, pathlib, sys, time; from pipeline.apply.mlflow_lock import MlflowLock\n"
             f"lock = MlflowLock({mlflow_server!r}, {key!r}); lock.holder()  # warm: imports, connection\n"
             "print('ready', flush=True)\n"
             f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
             "for _ in range(2):\n"
             "    with lock.acquire(timeout=30):\n"
             f"        open({str(log)!r}, 'a').write(f'in {{os.getpid()}}\\n')\n"
             "        time.sleep(0.05)\n"
             f"        open({str(log)!r}, 'a').write(f'out {{os.getpid()}}\\n')\n")
    racers = [subprocess.Popen([sys.executable, "-c", racer], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(4)]
    assert [r.stdout.readline().strip() for r in racers] == ["ready"] * 4
    go.touch()  # all start together, so they really contend
    errors = [r.communicate(timeout=60)[1] for r in racers]
    assert all(r.returncode == 0 for r in racers), errors
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * 2 * 2
    # Each "in PID" is followed at once by that pid's "out": nobody entered while another held it.
    assert lines == [f"{step} {pid}" for pid in (line.split()[1] for line in lines[0::2]) for step in ("in", "out")]


def test_force_unlock_needs_the_exact_id(mlflow_server):
    key = _key()
    held = MlflowLock(mlflow_server, key).acquire()
    with pytest.raises(LockError, match="not locked"):
        MlflowLock(mlflow_server, _key()).force_unlock(held.id)
    for wrong in ("wrong", held.id[:-1], held.id.upper()):
        with pytest.raises(LockError, match="does not match"):
            MlflowLock(mlflow_server, key).force_unlock(wrong)
    assert MlflowLock(mlflow_server, key).force_unlock(held.id)["id"] == held.id
    assert held.holder() is None
    current = MlflowLock(mlflow_server, key).acquire()
    held.release()  # a stale holder never removes someone else's lock
    assert current.holder()["id"] == current.id
    current.release()


def test_a_killed_holder_on_this_host_is_taken_over_with_a_notice(mlflow_server):
    key = _key()
    code = ("import sys, time; from pipeline.apply.mlflow_lock import MlflowLock; "
            f"print(MlflowLock({mlflow_server!r}, {key!r}).acquire().id, flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    dead_id = holder.stdout.readline().strip()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert MlflowLock(mlflow_server, key).holder()["id"] == dead_id
    notices: list[str] = []
    lock = MlflowLock(mlflow_server, key, notice=notices.append).acquire(timeout=0)
    assert lock.holder()["id"] == lock.id != dead_id
    assert len(notices) == 1 and dead_id in notices[0] and "no longer running" in notices[0]
    lock.release()


def test_a_holder_elsewhere_is_named_with_its_ci_run(mlflow_server, monkeypatch):
    key = _key()
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    held = MlflowLock(mlflow_server, key, "destroy").acquire()
    monkeypatch.delenv("GITHUB_RUN_ID")
    with pytest.raises(LockError) as raised:
        MlflowLock(mlflow_server, key).acquire(timeout=0)
    message = str(raised.value)
    assert "CI run https://github.com/acme/models/actions/runs/4242" in message and "destroy by" in message
    assert held.id in message
    # Seen from another host, it cannot be proven dead: the message says how to release it by hand.
    monkeypatch.setattr("socket.gethostname", lambda: "another-runner")
    with pytest.raises(LockError, match=f"`mlops force-unlock {held.id}`"):
        MlflowLock(mlflow_server, key).acquire(timeout=0)
    held.release()
