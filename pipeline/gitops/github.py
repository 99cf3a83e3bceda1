"""One sticky pull-request comment holding the plan, via the GitHub REST API (httpx).

The comment is found by a hidden marker (``<!-- mlops-plan -->``) among the pull request's
comments and edited in place, so a pull request carries one up-to-date plan, not one per push.
Endpoints used: ``GET /repos/{repo}/issues/{n}/comments`` (paginated by ``Link``),
``PATCH /repos/{repo}/issues/comments/{id}`` and ``POST /repos/{repo}/issues/{n}/comments``.
``mlops promote --open-pr`` opens (or, for a branch that has one, updates) a pull request:
``GET /repos/{repo}/pulls?head=OWNER:BRANCH``, ``POST /repos/{repo}/pulls``, ``PATCH /repos/{repo}/pulls/{n}``.
"""

from __future__ import annotations

import httpx

from pipeline.errors import MlopsError

MARKER = "<!-- mlops-plan -->"
DEFAULT_API = "https://api.github.com"


def _why(response: httpx.Response) -> str:
    """GitHub's own words for a validation failure (``message`` and each ``errors[].message``), on one line."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].replace("\n", " ")
    parts = [str(data.get("message") or "")] + [str(e.get("message") or e.get("code") or "")
                                                for e in data.get("errors") or [] if isinstance(e, dict)]
    return "; ".join(p for p in parts if p) or response.text[:200].replace("\n", " ")


class GitHub:
    def __init__(self, token: str, repository: str, api_url: str = DEFAULT_API, timeout: float = 30):
        if not token:
            raise MlopsError("no GitHub token: set GITHUB_TOKEN (in Actions: ${{ secrets.GITHUB_TOKEN }})")
        if repository.count("/") != 1:
            raise MlopsError(f"repository '{repository}' must look like OWNER/NAME (GITHUB_REPOSITORY)")
        self.repository = repository
        self.client = httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "mlops"})

    def _call(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise MlopsError(f"GitHub API unreachable ({method} {url}): {error}") from None
        if response.status_code in (401, 403):
            raise MlopsError(f"GitHub refused {method} {url} ({response.status_code}): the token needs "
                             "'pull-requests: write' permission on this repository")
        if response.status_code == 404:
            raise MlopsError(f"GitHub has no {url} (404): check GITHUB_REPOSITORY and the pull request number")
        if response.status_code == 422:
            raise MlopsError(f"GitHub refused {method} {url} (422): {_why(response)}")
        if response.status_code >= 400:
            raise MlopsError(f"GitHub answered {response.status_code} to {method} {url}: {response.text[:200]}")
        return response

    def find_comment(self, number: int) -> int | None:
        url: str | None = f"/repos/{self.repository}/issues/{number}/comments"
        params: dict | None = {"per_page": 100}
        while url:
            response = self._call("GET", url, params=params)
            for comment in response.json():
                if MARKER in (comment.get("body") or ""):
                    return comment["id"]
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
        return None

    def upsert_comment(self, number: int, body: str) -> tuple[str, str]:
        """Create or update the plan comment; returns (action, comment URL)."""
        if MARKER not in body:
            body = f"{MARKER}\n{body}"
        existing = self.find_comment(number)
        if existing is None:
            response = self._call("POST", f"/repos/{self.repository}/issues/{number}/comments", json={"body": body})
            return "created", response.json().get("html_url", "")
        response = self._call("PATCH", f"/repos/{self.repository}/issues/comments/{existing}", json={"body": body})
        return "updated", response.json().get("html_url", "")

    def open_pull_request(self, branch: str, base: str, title: str, body: str) -> tuple[str, int, str]:
        """Open a pull request from ``branch`` into ``base``, or update the open one it already has (a re-run
        must not duplicate it); returns (action, number, URL)."""
        owner = self.repository.split("/", 1)[0]
        found = self._call("GET", f"/repos/{self.repository}/pulls",
                           params={"head": f"{owner}:{branch}", "state": "open", "per_page": 100}).json()
        existing = next((pr for pr in found if (pr.get("head") or {}).get("ref", branch) == branch), None)
        if existing is None:
            response = self._call("POST", f"/repos/{self.repository}/pulls",
                                  json={"title": title, "head": branch, "base": base, "body": body})
            action = "opened"
        else:
            response = self._call("PATCH", f"/repos/{self.repository}/pulls/{existing['number']}",
                                  json={"title": title, "body": body})
            action = "updated"
        data = response.json()
        return action, int(data.get("number") or (existing or {}).get("number") or 0), data.get("html_url", "")
