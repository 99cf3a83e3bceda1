"""Wheels for offline, repeatable image builds, downloaded once per set of requirements.

``pip download`` fetches the wheels of the service's and the environment's requirements for the
image's Python into ``<cache>/wheels/<hash>``, where the hash covers the Python version, the
platform and both requirement files: a change of requirements downloads a new set, an unchanged
one is reused (even offline). The build installs from that folder with ``--no-index``.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.errors import BuildError


def wheels_key(python: str, requirements: list[str]) -> str:
    text = "\0".join([python, platform.machine(), *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pip_errors(output: str, limit: int = 10) -> str:
    """pip's own ``ERROR:`` lines (or the last lines when it printed none)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.lstrip().startswith("ERROR:")]
    return "\n".join((errors or lines)[-limit:])


def download(folder: Path, requirements: list[str], python: str | None = None) -> Path:
    """``pip download`` binary wheels for ``requirements`` (texts) into ``folder``, all or nothing."""
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    files = []
    try:
        for number, text in enumerate(requirements):
            path = partial / f"requirements-{number}.txt"
            path.write_text(text)
            files.append(path)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary", ":all:", "-d", str(partial / "wheels")]
        if python:
            command += ["--python-version", python]
        for path in files:
            command += ["-r", str(path)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"downloading wheels failed (pip download):\n{pip_errors(result.stderr)}")
        (partial / "wheels").replace(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def cached_wheels(root: Path, python: str, requirements: list[str], progress=print) -> Path:
    """The wheel folder for these requirements under ``root``, downloaded when missing."""
    folder = root / wheels_key(python, requirements)
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    progress(f"downloading wheels for Python {python} into {folder}")
    return download(folder, requirements, python)
