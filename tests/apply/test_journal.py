"""The journal tells which apply was interrupted and in which step, even after a torn last line."""

from __future__ import annotations

from pipeline.apply.journal import Journal


def test_finished_apply_is_not_interrupted(tmp_path):
    journal = Journal(tmp_path, "a1")
    journal.record("start", step="register:iris")
    journal.record("done", step="register:iris")
    journal.close("ok")
    assert Journal.interrupted(tmp_path) is None


def test_killed_apply_names_the_running_step_despite_a_torn_line(tmp_path):
    journal = Journal(tmp_path, "a2")
    journal.record("start", step="register:iris")
    journal.record("done", step="register:iris")
    journal.record("start", step="deploy:iris/blue")
    with journal.path.open("a") as handle:
        handle.write('{"event": "do')  # killed in the middle of a write
    assert Journal.interrupted(tmp_path) == {"apply": "a2", "step": "deploy:iris/blue", "done": 1}
