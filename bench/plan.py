"""How `mlops plan` scales: a generated repo with N models and N deployments, no-op and 1 % changed.

    python bench/plan.py [--sizes 100 1000 10000] [--mlflow 100]

Times what a plan does for each size, through the functions `mlops plan` calls: load and validate
mlops.yaml, observe (read the registry, hash every model with a warm hash cache: only stats, read
the target), and reconcile. The deployments are taken as running
as the file says (a target observing 10,000 live processes measures the target, not the plan;
the local target's observe is one record read and one readiness request per instance).
Prints one table (wall and CPU seconds); the per-deployment column shows whether growth is linear. ``--mlflow N`` also
starts a real ``mlflow server`` (SQLite store, served artifacts) on loopback and compares a no-op
plan of N models against it with the embedded registry at the same size, side by side.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.apply.observe import observe
from pipeline.plan import reconcile
from pipeline.registry import LocalRegistry
from pipeline.spec.loader import load
from pipeline.spec.model import settings_digest
from pipeline.state import ObservedDeployment, ObservedEndpoint


def generate(root: Path, count: int) -> None:
    lines = ["version: 1", "models:"]
    for i in range(count):
        folder = root / "models" / f"m{i}"
        folder.mkdir(parents=True)
        (folder / "model.bin").write_bytes(random.randbytes(2048))
        (folder / "meta.json").write_text(f'{{"id": {i}}}')
        lines.append(f"  m{i}: {{path: models/m{i}, flavor: sklearn}}")
    lines += ["targets:", "  local: {type: local}", "endpoints:"]
    per_endpoint = 10
    for e in range(0, count, per_endpoint):
        lines += [f"  e{e}:", "    target: local", f"    traffic: {{d{e}: 100}}", "    deployments:"]
        lines += [f"      d{i}: {{model: m{i}}}" for i in range(e, min(e + per_endpoint, count))]
    (root / "mlops.yaml").write_text("\n".join(lines) + "\n")


class _Running:
    """The local target, as if every deployment ran as the file says (see the module docstring)."""

    def __init__(self, endpoints: dict, deployments: dict):
        self.endpoints, self.deployments = endpoints, deployments

    def observe(self) -> tuple[list, list]:
        return list(self.endpoints.values()), list(self.deployments.values())


def plan_once(root: Path, running: _Running | None) -> tuple[tuple[float, float], object, _Running]:
    """One plan as `mlops plan` makes it: load the file, observe (registry, tree, target), reconcile.
    Returns (wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier."""
    started, cpu = time.perf_counter(), time.process_time()
    spec = load(root / "mlops.yaml")
    registry = LocalRegistry(spec.registry_path())
    if running is None:  # everything runs as the file says, at the registered versions
        actual = observe(spec, registry, {})
        running = _Running({}, {})
        for endpoint in spec.endpoints.values():
            running.endpoints[endpoint.name] = ObservedEndpoint(endpoint.name, "local", traffic=dict(endpoint.traffic))
            for d in endpoint.deployments.values():
                version = actual.models[d.model.name].version_of(actual.model_contents[d.model.name])
                running.deployments[d.key] = ObservedDeployment(
                    d.endpoint, d.name, "local", f"{d.model.name}:{version}", ready_instances=1,
                    settings_digest=settings_digest(endpoint, d))
    actual = observe(spec, registry, {"local": running})
    plan = reconcile(spec, actual)
    registry.close()
    return (time.perf_counter() - started, time.process_time() - cpu), plan, running


def observe_plan(spec, registry) -> float:
    """One no-op plan as `mlops plan` makes it: observe the registry and the tree, then reconcile."""
    started = time.perf_counter()
    actual = observe(spec, registry, {})
    plan = reconcile(spec, actual)
    elapsed = time.perf_counter() - started
    assert not [s for s in plan.steps if s.kind == "register"], plan.summary()
    return elapsed


def compare_mlflow(size: int) -> None:
    """A no-op plan against a real MLflow server and against the embedded registry, same N models."""
    import os
    import socket
    import subprocess
    import sys

    from pipeline.registry.mlflow import MlflowRegistry

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-mlflow-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{work}/mlflow.db", "--artifacts-destination", str(work / "artifacts"),
                               "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import httpx

        uri = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        root = work / "repo"
        generate(root, size)
        spec = load(root / "mlops.yaml")
        local = LocalRegistry(spec.registry_path())
        remote = MlflowRegistry(uri, work / "cache", project="bench")
        started = time.perf_counter()
        for model in spec.models.values():
            local.register(model.name, spec.root / model.path, flavor=model.flavor)
            remote.register(model.name, spec.root / model.path, flavor=model.flavor)
        registering = time.perf_counter() - started
        rounds = [(observe_plan(spec, local), observe_plan(spec, remote)) for _ in range(5)]
        embedded = sorted(r[0] for r in rounds)[2]
        shared = sorted(r[1] for r in rounds)[2]
        print(f"\nNo-op plan of {size} models, observe + reconcile, median of 5 interleaved rounds "
              f"(registering both took {registering:.1f} s):\n")
        print("| registry | no-op plan (s) | ratio |")
        print("|---|---:|---:|")
        print(f"| embedded (SQLite) | {embedded:.3f} | 1.0× |")
        print(f"| MLflow server on loopback | {shared:.3f} | {shared / embedded:.1f}× |")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--mlflow", type=int, metavar="N", help="also compare N models on a real MLflow server")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="mlops-bench-plan-"))
        try:
            generate(root, size)
            spec = load(root / "mlops.yaml")
            registry = LocalRegistry(spec.registry_path())
            for model in spec.models.values():
                registry.register(model.name, spec.root / model.path, flavor=model.flavor)
            _, _, running = plan_once(root, None)
            noop = min(plan_once(root, running)[0] for _ in range(3))  # the fastest of 3, by wall time
            _, plan, _ = plan_once(root, running)
            assert not plan.has_changes, plan.summary()
            for i in random.sample(range(size), max(1, size // 100)):
                (root / "models" / f"m{i}" / "model.bin").write_bytes(random.randbytes(2048))
            (changed, _), plan, _ = plan_once(root, running)
            rows.append((size, noop, changed, plan.summary()))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print("| models = deployments | no-op plan (s) | CPU (s) | per deployment (ms) | 1 % changed (s) | plan |")
    print("|---:|---:|---:|---:|---:|---|")
    for size, (noop, cpu), changed, summary in rows:
        print(f"| {size:,} | {noop:.3f} | {cpu:.3f} | {noop / size * 1000:.3f} | {changed:.3f} | {summary} |")
    if args.mlflow:
        compare_mlflow(args.mlflow)


if __name__ == "__main__":
    main()
