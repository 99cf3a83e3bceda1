"""``mlops promote`` on real git repositories, an embedded registry and a local fake of GitHub's pulls API."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import git
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import MlopsError
from pipeline.gitops.promote import promotions_of, rebalance
from pipeline.registry import open_registry
from pipeline.spec.loader import load
from tests.gitops.fake_github import FakeGitHubServer

SPEC = """\
# the scoring endpoint of the team
version: 1
registry: .mlops/registry
models:
  scorer:
    path: models/scorer   # a python model
    flavor: python
targets:
  local: {type: local}
endpoints:
  iris:
    target: local
    traffic: {blue: 100, green: 0}   # green is the candidate
    deployments:
      blue:
        model: scorer:1     # what production serves
      green:
        model: scorer:1
"""

SCORE = "def init():\n    pass\n\n\ndef run(data):\n    return {version}\n"


@pytest.fixture
def project(tmp_path: Path):
    """A clone of a bare origin with mlops.yaml committed on main and scorer:1..3 registered."""
    origin = tmp_path / "origin.git"
    git.Repo.init(origin, bare=True, initial_branch="main")
    root = tmp_path / "work"
    repo = git.Repo.clone_from(origin, root)
    repo.git.checkout("-b", "main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "Ada").set_value("user", "email", "ada@example.com")
    (root / "mlops.yaml").write_text(SPEC)
    (root / ".gitignore").write_text(".mlops/\n")
    registry = open_registry(root / ".mlops" / "registry")
    for version in (1, 2, 3):
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        (folder / "score.py").write_text(SCORE.format(version=version))
        registry.register("scorer", folder, flavor="python", tags={"stage": f"s{version}"},
                          lineage={"commit": f"{version}" * 40, "author": "Trainer <t@example.com>"})
    (root / "models" / "scorer").mkdir(parents=True)
    (root / "models" / "scorer" / "score.py").write_text(SCORE.format(version=1))
    repo.git.add(A=True)
    repo.index.commit("first model")
    repo.git.push("origin", "main")
    return root


def mlops(root: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["--file", str(root / "mlops.yaml"), "promote", *args], env=env)


def test_promotes_a_version_keeping_comments_and_printing_the_diff(project):
    result = mlops(project, "iris/green", "--to", "2")
    assert result.exit_code == 0, result.output
    text = (project / "mlops.yaml").read_text()
    assert text == SPEC.replace("      green:\n        model: scorer:1", "      green:\n        model: scorer:2")
    assert "-        model: scorer:1\n+        model: scorer:2" in result.output
    assert "Mlops-Promote: iris/green scorer:2 from version 2 by Ada" in result.output
    assert load(project / "mlops.yaml").endpoints["iris"].deployments["green"].model.version == 2


def test_promotes_from_another_deployment_falling_back_to_the_file(project):
    (project / "mlops.yaml").write_text(SPEC.replace("model: scorer:1     # what", "model: scorer:3     # what"))
    result = mlops(project, "iris/green", "--from", "iris/blue")
    assert result.exit_code == 0, result.output
    assert "iris/blue serves scorer:3 (read from mlops.yaml, which pins scorer:3)" in result.output
    assert load(project / "mlops.yaml").endpoints["iris"].deployments["green"].model.version == 3


def test_traffic_is_rebalanced_with_the_one_other_deployment(project):
    result = mlops(project, "iris/green", "--to", "3", "--traffic", "30")
    assert result.exit_code == 0, result.output
    text = (project / "mlops.yaml").read_text()
    assert "traffic: {blue: 70, green: 30}   # green is the candidate" in text
    spec = load(project / "mlops.yaml")
    assert dict(spec.endpoints["iris"].traffic) == {"blue": 70, "green": 30}


def test_rebalance_refuses_an_ambiguous_split():
    assert rebalance({"a": 100, "b": 0, "c": 0}, ["a", "b", "c"], "b", 10) == {"a": 90, "b": 10, "c": 0}
    assert rebalance({"a": 50, "b": 50, "c": 0}, ["a", "b", "c"], "c", 100) == {"a": 0, "b": 0, "c": 100}
    with pytest.raises(MlopsError, match="ambiguous"):
        rebalance({"a": 50, "b": 50, "c": 0}, ["a", "b", "c"], "c", 20)


def test_promoting_what_is_pinned_changes_nothing_and_opens_nothing(project):
    result = mlops(project, "iris/blue", "--to", "scorer:1", "--open-pr", env={"GITHUB_TOKEN": ""})
    assert result.exit_code == 0, result.output
    assert "already pins iris/blue → scorer:1; nothing to change, no pull request opened." in result.output
    assert (project / "mlops.yaml").read_text() == SPEC
    assert git.Repo(project).active_branch.name == "main"


@pytest.mark.parametrize("args, message", [
    (("--to", "9"), "scorer:9 is not in the registry (registered: scorer:1, scorer:2, scorer:3)"),
    (("--to", "models:/scorer@champion"), "models:/scorer@champion is not in the registry"),
    (("--to", "other:1"), "no version of 'other' is registered"),
    (("--from", "iris/nope"), "endpoint 'iris' has no deployment 'nope' (it has: blue, green)"),
])
def test_what_cannot_be_promoted_is_refused_clearly(project, args, message):
    result = mlops(project, "iris/green", *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and (project / "mlops.yaml").read_text() == SPEC


class FakePulls(FakeGitHubServer):
    """GitHub's pulls endpoints for acme/models, keeping the pull requests opened; ``status`` fails them all."""

    def __init__(self, status: int = 200, error: dict | None = None):
        self.status, self.error = status, error
        self.pulls: list[dict] = []
        super().__init__()
        self.env = {"GITHUB_TOKEN": "t0ken", "GITHUB_REPOSITORY": "acme/models", "GITHUB_ACTOR": "ci-bot",
                    "GITHUB_API_URL": self.url}

    def handle(self, method: str, path: str, body):
        if method == "GET":
            if self.status == 403:
                return 403, {"message": "Resource not accessible by integration"}, {}
            head = parse_qs(urlparse(path).query)["head"][0]
            return 200, [p for p in self.pulls if f"acme:{p['head']['ref']}" == head], {}
        if method == "PATCH":
            pull = self.pulls[int(path.rsplit("/", 1)[1]) - 1]
            pull.update(body)
            return 200, pull, {}
        if self.status != 200:
            return self.status, self.error or {}, {}
        pull = {"number": len(self.pulls) + 1, "head": {"ref": body["head"]}, "base": {"ref": body["base"]},
                "title": body["title"], "body": body["body"], "html_url": "https://example.invalid/pull/1"}
        self.pulls.append(pull)
        return 201, pull, {}


@pytest.fixture
def github():
    servers: list[FakePulls] = []

    def start(status: int = 200, error: dict | None = None) -> FakePulls:
        servers.append(FakePulls(status, error))
        return servers[-1]

    yield start
    for server in servers:
        server.server.shutdown()


def test_open_pr_pushes_a_branch_and_opens_one_pull_request_with_the_plan(project, github):
    fake = github()
    result = mlops(project, "iris/green", "--to", "2", "--traffic", "50", "--open-pr", env=fake.env)
    assert result.exit_code == 0, result.output
    assert "Opened pull request #1 https://example.invalid/pull/1" in result.output
    branch = "mlops/promote-iris-green-2"
    origin = git.Repo(project.parent / "origin.git")
    pushed = origin.commit(branch)
    assert "Mlops-Promote: iris/green scorer:2 from version 2 by ci-bot" in pushed.message
    assert "model: scorer:2" in (pushed.tree / "mlops.yaml").data_stream.read().decode()
    assert list(pushed.stats.files) == ["mlops.yaml"]  # the promotion alone
    (pull,) = fake.pulls
    assert (pull["head"]["ref"], pull["base"]["ref"]) == (branch, "main")
    assert pull["title"] == "Promote iris/green to scorer:2"
    body = pull["body"]
    assert "### Changes to mlops.yaml since" in body and "~ deployment iris/green: model scorer:1 → scorer:2" in body
    assert "### mlops plan" in body and "<!-- mlops-plan -->" not in body
    assert "### Lineage of scorer:2" in body and "2" * 40 in body and "Trainer <t@example.com>" in body
    assert "| stage | s2 |" in body

    repo = git.Repo(project)
    repo.git.checkout("main")  # a re-run (say, the workflow run again) updates the same pull request
    again = mlops(project, "iris/green", "--to", "2", "--traffic", "50", "--open-pr", env=fake.env)
    assert again.exit_code == 0, again.output
    assert "Updated pull request #1" in again.output and len(fake.pulls) == 1
    assert [r[0] for r in fake.requests] == ["GET", "POST", "GET", "PATCH"]


@pytest.mark.parametrize("status, error, message", [
    (403, None, "(403): the token needs 'pull-requests: write'"),
    (422, {"message": "Validation Failed", "errors": [{"message": "No commits between main and the branch"}]},
     "(422): Validation Failed; No commits between main and the branch"),
])
def test_refusals_of_the_api_are_one_clear_line(project, github, status, error, message):
    fake = github(status, error)
    result = mlops(project, "iris/green", "--to", "2", "--open-pr", env=fake.env)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_open_pr_refuses_uncommitted_changes_to_the_file(project, github):
    (project / "mlops.yaml").write_text(SPEC.replace("# the scoring", "# my edit to the scoring"))
    result = mlops(project, "iris/green", "--to", "2", "--open-pr", env=github().env)
    assert result.exit_code == 1 and "mlops.yaml has uncommitted changes" in result.output, result.output


def test_history_finds_the_trailer_in_a_commit_or_in_what_a_merge_brought(tmp_path):
    repo = git.Repo.init(tmp_path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "Ada").set_value("user", "email", "ada@example.com")
    (tmp_path / "a").write_text("1")
    repo.git.add(A=True)
    repo.git.commit("-m", "first")
    repo.git.checkout("-b", "promo")
    (tmp_path / "a").write_text("2")
    repo.git.commit("-am", "Promote\n\nMlops-Promote: iris/blue scorer:2 from version 2 by Ada")
    own = repo.head.commit.hexsha
    repo.git.checkout("main")
    (tmp_path / "b").write_text("x")
    repo.git.add(A=True)
    repo.git.commit("-m", "unrelated")
    repo.git.merge("--no-ff", "promo", "-m", "Merge pull request #1")
    merge = repo.head.commit.hexsha
    expected = ["iris/blue scorer:2 from version 2 by Ada"]
    assert promotions_of(tmp_path, own) == expected and promotions_of(tmp_path, merge) == expected
    assert promotions_of(tmp_path, repo.head.commit.parents[0].hexsha) == []
    assert promotions_of(tmp_path, "0" * 40) == []
