"""The sticky plan comment against a local fake of GitHub's two comment endpoints, over real HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.gitops.github import MARKER


class FakeGitHub:
    """Pages of comments on pull request 7 of acme/models; records every request."""

    def __init__(self, pages: list[list[dict]], status: int = 200):
        self.pages, self.status, self.requests = pages, status, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                return body

            def do_GET(self):
                self._record()
                if fake.status != 200:
                    return self._reply(fake.status, {"message": "Resource not accessible by integration"})
                page = int(parse_qs(urlparse(self.path).query).get("page", ["1"])[0])
                headers = {}
                if page < len(fake.pages):
                    url = f"http://127.0.0.1:{fake.port}/repos/acme/models/issues/7/comments?page={page + 1}"
                    headers["Link"] = f'<{url}>; rel="next"'
                self._reply(200, fake.pages[page - 1], headers)

            def do_POST(self):
                body = self._record()
                self._reply(201, {"id": 99, "body": body["body"], "html_url": "https://example.invalid/c/99"})

            def do_PATCH(self):
                body = self._record()
                self._reply(200, {"id": int(self.path.rsplit("/", 1)[1]), "body": body["body"]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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
