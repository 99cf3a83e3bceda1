"""The spec editor changes only the values it is asked to, so a written mlops.yaml diffs minimally."""

from __future__ import annotations

import pytest

from pipeline.spec.editor import EditError, Editor

TEXT = """\
# the models we serve
endpoints:
  iris:
    target: local            # processes on this machine
    traffic: {blue: 90, green: 10}   # canary
    deployments:
      blue:
        model: "iris-classifier"     # quoted on purpose
      green:
        model: iris-classifier
        data_collector:
          sampling_rate: 1.0
"""


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]


def test_replacing_values_keeps_comments_quotes_and_alignment():
    """A rollback's diff must show only the values it restores."""
    editor = Editor(TEXT)
    editor.set(("endpoints", "iris", "traffic", "blue"), 100)
    editor.set(("endpoints", "iris", "deployments", "blue", "model"), "iris-classifier:1")
    assert changed_lines(TEXT, editor.text) == [
        ("    traffic: {blue: 90, green: 10}   # canary", "    traffic: {blue: 100, green: 10}   # canary"),
        ('        model: "iris-classifier"     # quoted on purpose',
         '        model: "iris-classifier:1"     # quoted on purpose'),
    ]


def test_missing_key_joins_its_flow_mapping():
    editor = Editor(TEXT.replace("{blue: 90, green: 10}", "{blue: 100}"))
    editor.set(("endpoints", "iris", "traffic", "green"), 0)
    assert "    traffic: {blue: 100, green: 0}   # canary\n" in editor.text


def test_missing_key_joins_its_block_mapping_after_the_last_nested_line():
    editor = Editor(TEXT)
    editor.set(("endpoints", "iris", "deployments", "green", "instance_count"), 2)
    assert editor.text == TEXT + "        instance_count: 2\n"


def test_missing_mapping_is_added_as_one_flow_mapping():
    editor = Editor(TEXT)
    editor.set(("endpoints", "iris", "mirror_traffic", "green"), 10)
    assert "    mirror_traffic: {green: 10}\n" in editor.text
    assert editor.get(("endpoints", "iris", "mirror_traffic")) == {"green": 10}


def test_empty_value_becomes_the_mapping():
    editor = Editor("endpoints:\n  iris:\n    mirror_traffic:   # none yet\n    target: local\n")
    editor.set(("endpoints", "iris", "mirror_traffic", "green"), 10)
    assert editor.text == "endpoints:\n  iris:\n    mirror_traffic: {green: 10}   # none yet\n    target: local\n"


def test_text_that_would_read_back_differently_is_quoted():
    editor = Editor("a: x\n")
    editor.set(("a",), "yes")
    assert editor.text == 'a: "yes"\n' and editor.get(("a",)) == "yes"


def test_a_value_shared_through_an_alias_is_refused():
    text = "base: &t {blue: 100}\nendpoints:\n  iris:\n    traffic: *t\n"
    with pytest.raises(EditError, match="alias"):
        Editor(text).set(("endpoints", "iris", "traffic", "blue"), 0)
