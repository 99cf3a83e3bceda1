"""An edge bundle from load to first answer: the example model exported by an edge target, loaded into an empty engine.

    DOCKER_HOST=... python bench/edge.py [--base-image IMAGE] [--rounds 3]

Copies this repository's example, declares it on a ``type: edge`` target and runs ``mlops apply`` on the
engine of ``DOCKER_HOST`` (which builds the bundle). Then, per round, a private ``dockerd`` with an empty data
root (as a device has: no layer of the bundle is there yet) gets ``docker load -i`` of the tarball and
``docker run --network host`` with the service on a free loopback port; the clock runs from the start of
``docker load`` to the first ``200`` of ``POST /score``. Prints one table (medians over the rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"
SPEC = """\
version: 1
models:
  iris-classifier: {{path: models/iris, flavor: sklearn, baseline: models/iris/baseline.csv}}
environments:
  sklearn: {{python: "3.11", requirements: environments/sklearn/requirements.txt}}
targets:
  devices: {{type: edge, output: dist/edge{base}}}
endpoints:
  iris:
    target: devices
    deployments:
      edge: {{model: iris-classifier, environment: sklearn}}
"""


def mlops(root: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=root, capture_output=True,
                            text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise SystemExit(f"mlops {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def empty_engine() -> Iterator[dict[str, str]]:
    """A private dockerd (own socket, data root, exec root, pid file; no bridge, no iptables), stopped after.

    What a device has: no image at all. tests/e2e/test_export.py loads its bundles into it too."""
    folder = Path(tempfile.mkdtemp(prefix="mlops-bench-edge-"))
    host = f"unix://{folder}/docker.sock"
    with open(folder / "dockerd.log", "wb") as log:
        process = subprocess.Popen(["dockerd", "--storage-driver=overlay2", "--iptables=false", "--bridge=none",
                                    "--data-root", str(folder / "data"), "--exec-root", str(folder / "exec"),
                                    "--pidfile", str(folder / "docker.pid"), "--host", host],
                                   stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "DOCKER_HOST": host}
    try:
        for _ in range(120):
            if process.poll() is not None:
                raise RuntimeError("dockerd did not start:\n" + (folder / "dockerd.log").read_text()[-2000:])
            if subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        yield env
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(folder))]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_answer(port: int, deadline: float) -> None:
    """Poll ``POST /score`` until it answers 200."""
    body = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("no answer from /score within 120 s")
        time.sleep(0.02)


def one_round(tarball: Path, image: str) -> tuple[float, float]:
    """(docker load seconds, docker run → first 200 seconds) on an empty engine."""
    with empty_engine() as env:
        started = time.monotonic()
        subprocess.run(["docker", "load", "-i", str(tarball)], env=env, check=True, capture_output=True)
        loaded = time.monotonic()
        port = free_port()
        name = f"bench-edge-{os.getpid()}"
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
                        "-e", f"MLOPS_PRIMARY_KEY={KEY}", "-e", f"MLOPS_PORT={port}", image], env=env, check=True,
                       capture_output=True)
        try:
            first_answer(port, time.monotonic() + 120)
            answered = time.monotonic()
        finally:
            subprocess.run(["docker", "rm", "-f", name], env=env, capture_output=True)
    return loaded - started, answered - loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", help="default: the local Debian base (mlops images base)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("dockerd"):
        raise SystemExit("needs dockerd to start an empty engine")
    root = Path(tempfile.mkdtemp(prefix="mlops-bench-edge-repo-"))
    try:
        for folder in ("models", "environments"):
            shutil.copytree(REPO / folder, root / folder)
        base = f', base_image: "{args.base_image}"' if args.base_image else ""
        (root / "mlops.yaml").write_text(SPEC.format(base=base))
        import docker

        client = docker.from_env()
        before = {tag for image in client.images.list() for tag in image.tags}
        started = time.monotonic()
        mlops(root, "apply", "--yes")
        applied = time.monotonic() - started
        bundle = json.loads((root / "dist/edge/iris-edge/bundle.json").read_text())
        tarball = root / "dist/edge/iris-edge" / bundle["tarball"]
        rounds = [one_round(tarball, bundle["image"]) for _ in range(args.rounds)]
        mlops(root, "destroy", "--yes")
        for ref in (bundle["image"], bundle["environment_image"]):  # what this run added to DOCKER_HOST's engine
            if ref not in before:
                with contextlib.suppress(docker.errors.DockerException):
                    client.images.remove(ref, force=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = statistics.median(r[0] for r in rounds)
    run = statistics.median(r[1] for r in rounds)
    total = statistics.median(r[0] + r[1] for r in rounds)
    print(f"Command: python bench/edge.py{' --base-image ' + args.base_image if args.base_image else ''} "
          f"--rounds {args.rounds}  (medians of {args.rounds} rounds, each on an empty engine)\n")
    print("| measure | value | note |")
    print("|---|---:|---|")
    print(f"| tarball ({bundle['format']}) | {bundle['tarball_size'] / 1e6:.1f} MB | "
          f"{bundle['model']}:{bundle['version']}, platform {bundle['platform']} |")
    print(f"| image, unpacked | {bundle['image_size'] / 1e6:.1f} MB | environment image + model layer |")
    print(f"| mlops apply (build + export) | {applied:.1f} s | with the environment build if missing |")
    print(f"| docker load | {load:.1f} s | empty data root |")
    print(f"| docker run → first 200 from /score | {run:.2f} s | --network host, loopback port, key auth |")
    print(f"| docker load → first 200 | {total:.1f} s | |")


if __name__ == "__main__":
    main()
