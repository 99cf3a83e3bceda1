"""Image builds on a real Docker engine: cold build, unchanged rebuild, and a model-only update.

    DOCKER_HOST=... python bench/build.py [--base-image IMAGE]

Uses a copy of this repository's example on a docker target and the real CLI. Prints one table:
the cold build (a new project folder: its image never exists yet, the wheel cache may be warm), an
unchanged re-plan (target: 0 builds), and the time to roll out a new model version (no build: the
model is mounted, not baked into the image).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mlops(root: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=root, capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"mlops {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", help="default: the local Debian base (mlops images base)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mlops-bench-build-"))
    try:
        for folder in ("models", "environments"):
            shutil.copytree(REPO / folder, root / folder)
        spec = (REPO / "mlops.yaml").read_text()
        base = f', base_image: "{args.base_image}"' if args.base_image else ""
        spec = spec.replace("  local: {type: local}", f"  box: {{type: docker{base}}}")
        (root / "mlops.yaml").write_text(spec.replace("    target: local", "    target: box"))
        mlops(root, "images", "base")
        started = time.perf_counter()
        mlops(root, "apply", "--yes")
        cold = time.perf_counter() - started
        started = time.perf_counter()
        plan = mlops(root, "plan")
        replan = time.perf_counter() - started
        builds = plan.count(" build ")
        (root / "models" / "iris" / "NOTES.md").write_text("a new version\n")
        started = time.perf_counter()
        update = mlops(root, "apply", "--yes")
        model_only = time.perf_counter() - started
        assert " build " not in update
        mlops(root, "destroy", "--yes")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| measure | time | note |")
    print("|---|---:|---|")
    print(f"| cold build + first deploy | {cold:.1f} s | image built from the base, wheels offline |")
    print(f"| re-plan, nothing changed | {replan:.2f} s | {builds} builds planned (target 0) |")
    print(f"| model-only update (register + rolling update) | {model_only:.1f} s | 0 builds |")


if __name__ == "__main__":
    main()
