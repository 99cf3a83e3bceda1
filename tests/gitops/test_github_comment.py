"""The sticky plan comment against a local fake of GitHub's two comment endpoints, over real HTTP."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.gitops.github import MARKER
from tests.gitops.fake_github import FakeGitHubServer


class FakeGitHub(FakeGitHubServer):
    """Pages of comments on pull request 7 of acme/models; records every request."""

    def __init__(self, pages: list[list[dict]], status: int = 200):
        self.pages, self.status = pages, status
        super().__init__()

    def handle(self, method: str, path: str, body):
        if method == "POST":
            return 201, {"id": 99, "body": body["body"], "html_url": "https://example.invalid/c/99"}, {}
        if method == "PATCH":
            return 200, {"id": int(path.rsplit("/", 1)[1]), "body": body["body"]}, {}
        if self.status != 200:
            return self.status, {"message": "Resource not accessible by integration"}, {}
        page = int(parse_qs(urlparse(path).query).get("page", ["1"])[0])
        headers = {}
        if page < len(self.pages):
            url = f"{self.url}/repos/acme/models/issues/7/comments?page={page + 1}"
            headers["Link"] = f'<{url}>; rel="next"'
        return 200, self.pages[page - 1], headers

    def post(self, tmp_path, body="### plan\n"):
        path = tmp_path / "plan.md"
        path.write_text(body)
        return CliRunner().invoke(cli, ["comment", "--pr", "7", "--body-file", str(path), "--repository",
                                        "acme/models", "--api-url", f"http://127.0.0.1:{self.port}"],
                                  env={"GITHUB_TOKEN": "t0ken"})


@pytest.fixture
def github():
    servers = []

    def start(pages, status=200):
        servers.append(FakeGitHub(pages, status))
        return servers[-1]

    yield start
    for server in servers:
        server.server.shutdown()


def test_creates_the_comment_when_none_has_the_marker(github, tmp_path):
    fake = github([[{"id": 1, "body": "looks good"}]])
    result = fake.post(tmp_path)
    assert result.exit_code == 0, result.output
    method, path, headers, body = fake.requests[-1]
    assert (method, path) == ("POST", "/repos/acme/models/issues/7/comments")
    assert body["body"].startswith(MARKER) and "### plan" in body["body"]
    assert headers["Authorization"] == "Bearer t0ken" and headers["Accept"] == "application/vnd.github+json"


def test_updates_the_marked_comment_found_on_a_later_page(github, tmp_path):
    fake = github([[{"id": 1, "body": "hello"}], [{"id": 42, "body": f"{MARKER}\nold plan"}]])
    result = fake.post(tmp_path, f"{MARKER}\nnew plan")
    assert result.exit_code == 0, result.output
    assert [r[0] for r in fake.requests] == ["GET", "GET", "PATCH"]
    assert fake.requests[-1][1] == "/repos/acme/models/issues/comments/42"
    assert fake.requests[-1][3] == {"body": f"{MARKER}\nnew plan"}


def test_forbidden_token_is_a_clear_error(github, tmp_path):
    result = github([[]], status=403).post(tmp_path)
    assert result.exit_code == 1 and "pull-requests: write" in result.output and "Traceback" not in result.output
