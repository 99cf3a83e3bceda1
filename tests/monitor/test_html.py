"""`mlops monitor --format html`: one file that a real browser opens offline and draws every chart of.

The page is loaded in headless Chromium driven over the Chrome DevTools Protocol (a websocket, with
``websocket-client``, already installed as a dependency of the Kubernetes client): unlike
``--dump-dom``, the protocol reports console errors, uncaught exceptions and every network request,
and lets the test measure what was drawn. Skipped without Chromium unless MLOPS_REQUIRE_BROWSER=1
(CI installs it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("MLOPS_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on PATH, but MLOPS_REQUIRE_BROWSER=1 (.ci/run installs it)")
        pytest.skip("no chromium on PATH")
    return found


class Browser:
    """One headless Chromium page over the DevTools protocol: navigate, then read what happened."""

    def __init__(self, executable: str, profile: Path):
        import websocket  # websocket-client

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1300,2000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import httpx

        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def open(self, url: str) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not load")
            self.events.append(json.loads(self.socket.recv()))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = _chromium()
    profile = Path(tempfile.mkdtemp(dir=tmp_path))
    opened = Browser(executable, profile)
    yield opened
    opened.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The example repository, a 400-row baseline, and 2 hours of traffic of two deployments (green shifted)."""
    shutil.copytree(REPO / "models", tmp_path / "models")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    text = (REPO / "mlops.yaml").read_text()
    green = ("      green:\n        model: iris-classifier\n        environment: sklearn\n"
             "        data_collector: {sampling_rate: 1.0, rolling_rate: hour}\n")
    traffic = text.replace("    traffic: {blue: 100}\n", "    traffic: {blue: 90, green: 10}\n")
    (tmp_path / "mlops.yaml").write_text(traffic
                                         .replace("    deployments:\n", "    deployments:\n" + green, 1))
    generator = np.random.default_rng(3)
    baseline = generator.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.7, 0.7], (400, 4))
    np.savetxt(tmp_path / "models" / "iris" / "baseline.csv", baseline, delimiter=",", header=",".join(FEATURES),
               comments="", fmt="%.3f")
    now = datetime.now(UTC)
    for deployment, version, shift in (("blue", 1, 0.0), ("green", 2, 1.7)):
        files: dict[Path, list[str]] = {}
        for i in range(600):
            moment = now - timedelta(minutes=120) + timedelta(seconds=12 * i)
            row = generator.normal([5.8, 3.0, 3.8 + shift, 1.2], [0.8, 0.4, 1.7, 0.7]).round(3).tolist()
            status = 500 if i % 50 == 0 else 401 if i % 70 == 0 else 200
            event = {"time": moment.isoformat(), "deployment": deployment, "model": "iris-classifier",
                     "model_version": version, "route": "/score", "status": status,
                     "latency_ms": float(generator.gamma(2, 2)), "inputs": {"data": [row]},
                     "outputs": [int(generator.integers(3))] if status == 200 else None}
            folder = tmp_path / ".mlops" / "data" / "iris" / deployment / moment.strftime("%Y/%m/%d/%H")
            files.setdefault(folder / "00-1-0123abcd.jsonl", []).append(json.dumps(event))
        for path, lines in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    with path.open("a") as last:
        last.write('{"time": "not whole JSON\n')  # one corrupt line
    return tmp_path


def _monitor(repo: Path, *args: str):
    return CliRunner().invoke(cli, ["--file", str(repo / "mlops.yaml"), "monitor", "iris", *args])


@pytest.mark.slow
def test_the_html_report_opens_offline_and_draws_every_chart(repo, browser, tmp_path):
    out = tmp_path / "report.html"
    result = _monitor(repo, "--since", "3h", "--format", "html", "--out", str(out))
    assert result.exit_code == 0, result.output
    browser.open(out.as_uri())
    # per deployment: traffic, latency, predictions; per version with a baseline: PSI and the overlays
    expected = 2 * 3 + 2 * 2
    drawn = browser.evaluate("""[...document.querySelectorAll('figure.chart')].map(f => {
        const svg = f.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        return {name: f.dataset.chart, width: box.width, height: box.height,
                marks: svg ? svg.querySelectorAll('path, rect, use').length : 0}; })""")
    assert len(drawn) == expected, [d["name"] for d in drawn]
    assert all(d["width"] > 200 and d["height"] > 100 and d["marks"] > 10 for d in drawn), drawn
    assert browser.errors() == []
    assert [url for url in browser.requested() if not url.startswith(("file:", "data:"))] == []  # offline
    assert "drifted" in browser.evaluate("document.body.innerText")  # green's shifted petal_length
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))


def test_json_report_judges_drift_per_version_and_splits_errors(repo):
    result = _monitor(repo, "--since", "3h", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["skipped_lines"] == 1
    blue, green = report["deployments"]
    refused = sum(1 for i in range(600) if i % 50 and i % 70 == 0)  # as the fixture wrote them
    assert (blue["requests"], blue["model_errors"], blue["unauthorized"]) == (600, 600 // 50, refused)
    assert blue["drifted_features"] == 0
    features = {f["feature"]: f["drifted"] for f in green["versions"][0]["drift"]["features"]}
    assert features == {"sepal_length": False, "sepal_width": False, "petal_length": True, "petal_width": False}
    assert green["versions"][0]["model"] == "iris-classifier" and green["versions"][0]["version"] == 2


def test_fail_on_exits_1_naming_what_crossed(repo):
    result = _monitor(repo, "--since", "3h", "--fail-on", "drift>0.2,error_rate>5%")
    assert result.exit_code == 1
    assert "green: drift" in result.output and "crossed --fail-on drift>0.2" in result.output
    assert "blue: drift" not in result.output and "error_rate" not in result.output
    assert _monitor(repo, "--since", "3h", "--fail-on", "error_rate>5%").exit_code == 0


def test_fail_on_and_deployment_are_checked(repo):
    unknown = _monitor(repo, "--deployment", "purple")
    assert unknown.exit_code == 1 and "--deployment 'purple': endpoint 'iris' has blue, green" in unknown.output
    wrong = _monitor(repo, "--fail-on", "speed>3")
    assert wrong.exit_code == 1 and "--fail-on 'speed>3'" in wrong.output and "Traceback" not in wrong.output


def test_drift_rule_set_in_mlops_yaml_is_applied_and_stated(repo):
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace(
        "    baseline: models/iris/baseline.csv\n",
        "    baseline: models/iris/baseline.csv\n    drift: {psi_significant: 0.3, min_baseline_rows: 500}\n"))
    result = _monitor(repo, "--since", "3h")
    assert result.exit_code == 0, result.output
    assert "baseline too small to judge (400 rows, needs 500)" in result.output
    assert "0.1–0.3 moderate, > 0.3 significant" in result.output
    assert "1 corrupt lines skipped" in result.output
