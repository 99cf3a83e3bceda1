"""The state lock: one apply at a time, the holder named, dead holders taken over, force-unlock by id."""

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


def test_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_notice(tmp_path):
    code = ("import pathlib; from pipeline.apply.lock import StateLock; "
            f"StateLock(pathlib.Path({str(tmp_path)!r})).acquire()")
    subprocess.run([sys.executable, "-c", code], check=True)  # exits without releasing
    dead = json.loads((tmp_path / "lock.json").read_text())
    notices = []
    lock = StateLock(tmp_path, notice=notices.append).acquire(timeout=0)
    assert lock.holder()["id"] == lock.id != dead["id"]
    assert len(notices) == 1 and dead["id"] in notices[0] and "no longer running" in notices[0]


def test_a_reused_pid_does_not_keep_a_dead_holders_lock(tmp_path):
    held = StateLock(tmp_path).acquire()
    holder = held.holder()
    holder["pid_started"] -= 1000  # our pid, but the holder was a process started earlier
    (tmp_path / "lock.json").write_text(json.dumps(holder))
    assert StateLock(tmp_path).acquire(timeout=0).id != held.id


def test_a_live_holder_on_another_host_is_waited_for_and_named(tmp_path):
    held = StateLock(tmp_path).acquire()
    holder = {**held.holder(), "host": "another-host", "pid": 1}
    (tmp_path / "lock.json").write_text(json.dumps(holder))
    with pytest.raises(LockError) as raised:
        StateLock(tmp_path).acquire(timeout=0.2)
    assert "another-host" in str(raised.value) and f"lock id {held.id}" in str(raised.value)


def test_waiters_racing_for_a_dead_lock_never_both_hold_it(tmp_path):
    code = ("import pathlib; from pipeline.apply.lock import StateLock; "
            f"StateLock(pathlib.Path({str(tmp_path)!r})).acquire()")
    subprocess.run([sys.executable, "-c", code], check=True)
    racer = ("import pathlib, sys, time; from pipeline.apply.lock import StateLock; "
             f"lock = StateLock(pathlib.Path({str(tmp_path)!r})).acquire(timeout=0.5); "
             "time.sleep(1.5); print(lock.id if lock.holder()['id'] == lock.id else 'lost'); lock.release()")
    racers = [subprocess.Popen([sys.executable, "-c", racer], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = [r.communicate(timeout=30) for r in racers]
    held = [out.strip() for out, _ in outcomes if out.strip() and out.strip() != "lost"]
    assert len(held) == 1, outcomes  # one took it over; the others waited 0.5 s and failed naming it
    assert all("the state is locked by" in err for out, err in outcomes if not out.strip())


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
