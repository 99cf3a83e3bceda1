"""The README's "Serving with Docker" commands, run as written on a fresh engine, end with a score."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The section's shell lines, without the two that install and start the engine (the test starts its own)."""
    section = (REPO / "README.md").read_text().split("## Serving with Docker", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line and not line.startswith(("apt-get ", "dockerd "))]


@pytest.fixture
def fresh_engine():
    """A private dockerd with its own data root, stopped (only it) and removed afterwards."""
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        if os.environ.get("MLOPS_REQUIRE_DOCKER") == "1":
            pytest.fail("dockerd (and root) needed, but MLOPS_REQUIRE_DOCKER=1")
        pytest.skip("needs dockerd and root")
    folder = Path(tempfile.mkdtemp(prefix="mlops-readme-docker-"))
    socket = f"unix://{folder}/docker.sock"
    with open(folder / "dockerd.log", "w") as log:
        engine = subprocess.Popen(["dockerd", "--storage-driver=overlay2", "--iptables=false", "--bridge=none",
                                   "--data-root", str(folder / "data"), "--exec-root", str(folder / "exec"),
                                   "--pidfile", str(folder / "docker.pid"), "--host", socket],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            if engine.poll() is not None:
                pytest.fail("dockerd exited:\n" + (folder / "dockerd.log").read_text()[-2000:])
            if subprocess.run(["docker", "-H", socket, "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        yield socket
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
        prefix = f"{folder}/"
        for mount in sorted((line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                             if line.split()[1].startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_readme_docker_section_serves_a_score(fresh_engine, tmp_path):
    root = tmp_path / "repo"
    for folder in ("models", "environments"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copy(REPO / "mlops.yaml", root / "mlops.yaml")
    env = {**os.environ, "DOCKER_HOST": fresh_engine, "PYTHONPATH": str(REPO)}
    script = f'mlops() {{ "{sys.executable}" -m pipeline.cli.main "$@"; }}\nset -e\n' + "\n".join(readme_commands())
    try:
        result = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith('{"predictions":[0]}'), result.stdout
    finally:
        subprocess.run([sys.executable, "-m", "pipeline.cli.main", "destroy", "--yes"], cwd=root, env=env,
                       capture_output=True, timeout=120)
