"""The state lock: one apply at a time, the holder named, dead holders reported, force-unlock by id."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.apply.lock import StateLock
from pipeline.errors import LockError


def test_second_holder_waits_then_fails_naming_the_first(tmp_path):
    first = StateLock(tmp_path).acquire()
    with pytest.raises(LockError) as raised:
        StateLock(tmp_path).acquire(timeout=0.3)
    message = str(raised.value)
    assert f"lock id {first.id}" in message and "apply by" in message and "waited 0.3 s" in message
    first.release()
    StateLock(tmp_path).acquire(timeout=0.3).release()


def test_lock_of_a_dead_process_is_reported_with_the_unlock_command(tmp_path):
    code = ("import pathlib; from pipeline.apply.lock import StateLock; "
            f"StateLock(pathlib.Path({str(tmp_path)!r})).acquire()")
    subprocess.run([sys.executable, "-c", code], check=True)  # exits without releasing
    holder = json.loads((tmp_path / "lock.json").read_text())
    with pytest.raises(LockError) as raised:
        StateLock(tmp_path).acquire(timeout=0)
    assert "no longer running" in str(raised.value)
    assert f"mlops force-unlock {holder['id']}" in str(raised.value)


def test_force_unlock_needs_the_right_id(tmp_path):
    held = StateLock(tmp_path).acquire()
    with pytest.raises(LockError, match="does not match"):
        StateLock(tmp_path).force_unlock("wrong")
    assert StateLock(tmp_path).force_unlock(held.id)["id"] == held.id
    assert StateLock(tmp_path).holder() is None


def test_release_never_removes_someone_elses_lock(tmp_path):
    stale = StateLock(tmp_path).acquire()
    StateLock(tmp_path).force_unlock(stale.id)
    current = StateLock(tmp_path).acquire()
    stale.release()
    assert StateLock(tmp_path).holder()["id"] == current.id
