"""Each file in invalid/ holds one mistake (or one kind, each reported); its last lines say where and
which words each error has."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import SpecError
from pipeline.spec.loader import load

CORPUS = Path(__file__).parent / "invalid"
CASES = sorted(CORPUS.glob("*.yaml"))
EXPECT = re.compile(r"^# expect (\d+):(\d+): (.+)$", re.M)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the corpus folder with a symlink that points outside it."""
    shutil.copytree(CORPUS, tmp_path / "repo")
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "repo" / "outside-link").symlink_to(tmp_path / "secret.txt")
    return tmp_path / "repo"


def expectations(case: Path) -> list[tuple[int, int, list[str]]]:
    text = case.read_bytes().decode("utf-8", "replace")  # some cases are deliberately not UTF-8
    return [(int(line), int(column), words.split(" | ")) for line, column, words in EXPECT.findall(text)]


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_one_clear_error_per_mistake_at_the_right_place(repo: Path, case: Path):
    expected = expectations(case)
    with pytest.raises(SpecError) as raised:
        load(repo / case.name, name=case.name)
    problems = raised.value.problems
    assert len(problems) == len(expected), [str(p) for p in problems]
    for problem, (line, column, words) in zip(problems, expected, strict=True):
        assert (problem.line, problem.column) == (line, column), str(problem)
        for word in words:
            assert word in problem.message, str(problem)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_validate_exits_1_without_traceback(repo: Path, case: Path):
    result = CliRunner().invoke(cli, ["--file", str(repo / case.name), "validate"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for line, column, _ in expectations(case):
        assert f"{case.name}:{line}:{column}:" in result.output
