"""Environment virtualenvs for the local target: one venv per environment content hash.

``<state_dir>/envs/<env>-<12 hex>/`` holds the environment's requirements, the scoring service's
own dependencies pinned to the versions this mlops runs with, and the running ``pipeline``
package (linked, not copied), so ``<venv>/bin/python -m pipeline.server`` serves a model with
exactly what the environment declares. The digest covers everything that decides the venv's
content; an unchanged environment is never rebuilt.

Built with ``uv`` when it is on PATH or installed beside mlops (the ``uv`` extra; ``uv venv`` +
``uv pip install``: fast), else with ``python -m venv`` + pip. ``base_image`` and ``dockerfile``
concern images only; a ``conda_file`` cannot become a venv and is refused.

Venvs are not relocatable (console scripts and ``activate`` hold absolute paths), so a venv is
built in place rather than renamed from a temporary folder: a marker file written last commits
it. A folder without the marker is a killed build, ignored by ``observe`` and removed by the
next build. One file lock serializes builds and garbage collection across processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pipeline
from pipeline.builders import service_requirements
from pipeline.errors import BuildError
from pipeline.spec.model import Spec
from pipeline.spec.target_kinds import EnvironmentKind

ENVS_DIR = "envs"
MARKER = "mlops-venv.json"  # written last: its presence means the venv is complete
SOURCE_DIR = "mlops-src"  # holds the ``pipeline`` symlink the .pth file points at
REF_PREFIX = "venv:"
TAIL_LINES = 15


def _pipeline_dir() -> Path:
    return Path(pipeline.__file__).resolve().parent


def _requirements(spec: Spec, name: str) -> str:
    environment = spec.environments[name]
    return (spec.root / environment.requirements).read_text() if environment.requirements else ""


def _which_uv() -> str | None:
    """uv on PATH, else the one the ``uv`` extra installed beside mlops (not on PATH unless activated)."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return None


def _version_of(executable: str) -> str | None:
    """The full version a Python executable reports, or None when it does not run (a pyenv shim may not)."""
    try:
        result = subprocess.run([executable, "-c", "import platform; print(platform.python_version())"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _matches(version: str, full: str | None) -> bool:
    return full is not None and (full == version or full.startswith(version + "."))


def find_interpreter(version: str) -> tuple[Path, str] | None:
    """(executable, full version) of the Python that ``version`` asks for, or None when none is here.

    The running Python first (no subprocess: plans call this), then ``pythonX.Y`` on PATH, then one
    uv knows (uv finds installed interpreters, never downloads here).
    """
    if _matches(version, platform.python_version()):
        return Path(sys.executable), platform.python_version()
    candidates = [shutil.which(f"python{version}")]
    uv = _which_uv()
    if uv:
        result = subprocess.run([uv, "python", "find", "--no-python-downloads", version],
                                capture_output=True, text=True)
        candidates.append(result.stdout.strip() if result.returncode == 0 else None)
    for candidate in filter(None, candidates):
        full = _version_of(candidate)
        if full is not None and _matches(version, full):
            return Path(candidate), full
    return None


def _available_pythons() -> list[str]:
    """The versions that do run here (for the error message)."""
    found = {platform.python_version()}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith("python3.") and name.removeprefix("python3.").isdigit():
                found.add(_version_of(os.path.join(folder, name)) or "")
    found.discard("")
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def _error_lines(lines: list[str]) -> list[str]:
    """From pip's first ``ERROR:`` (uv's ``error:`` or ``×``) to the end, else the last lines."""
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith(("ERROR:", "error:", "×"))), None)
    return lines[first:][-TAIL_LINES:] if first is not None else lines[-TAIL_LINES:]


def environment_digest(spec: Spec, name: str) -> str:
    """``sha256:...`` over what decides the venv: Python, requirements, service pins, interpreter.

    The folder of the running ``pipeline`` package counts too: the venv links to it.
    """
    environment = spec.environments[name]
    interpreter = find_interpreter(environment.python)
    identity = f"{os.path.realpath(interpreter[0])} {interpreter[1]}" if interpreter else "missing"
    digest = hashlib.sha256(b"mlops-venv/1")
    for part in (environment.python, _requirements(spec, name), service_requirements(), identity,
                 str(_pipeline_dir())):
        digest.update(b"\0" + hashlib.sha256(part.encode()).digest())
    return "sha256:" + digest.hexdigest()


def venv_ref(environment: str, digest: str) -> str:
    """The content-hash name of an environment's virtual environment on the local target: ``venv:<env>:<12 hex>``."""
    return f"venv:{environment}:{digest.split(':', 1)[-1][:12]}"


class VenvBuilder:
    """Builds environment venvs under ``<state_dir>/envs``; knows which ones are complete."""

    def __init__(self, spec: Spec, state_dir: Path, progress: Callable[[str], None] | None = None):
        self.spec = spec
        self.root = Path(state_dir) / ENVS_DIR
        self.progress = progress or (lambda line: None)
        self.builds = 0  # venvs actually built by this builder (tests and reports count them)
        self._lock_fd: int | None = None

    # -- names -----------------------------------------------------------------------------

    def ref(self, name: str, digest: str) -> str:
        """``venv:<env>:<12 hex>``: stable for one content, shown in plans."""
        return venv_ref(name, digest)

    def path(self, ref: str) -> Path:
        """The folder of the venv a ref names (built or not)."""
        if not ref.startswith(REF_PREFIX) or ref.count(":") != 2:
            raise ValueError(f"{ref!r} is not a venv reference (venv:ENV:HEX)")
        _, name, tag = ref.split(":")
        return self.root / f"{name}-{tag}"

    def python(self, ref: str) -> Path:
        """The interpreter of a built venv (``<venv>/bin/python``)."""
        return self.path(ref) / "bin" / "python"

    def complete(self, ref: str) -> bool:
        return (self.path(ref) / MARKER).is_file()

    # -- observe ---------------------------------------------------------------------------

    def observe(self, spec: Spec) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], frozenset[str]]:
        """({target type: {env: digest}}, {target: {env: venv ref}}, refs of complete venvs) for the
        environments of venv targets."""
        digests: dict[str, dict[str, str]] = {}
        refs: dict[str, dict[str, str]] = {}
        wanted = []
        for endpoint in spec.endpoints.values():
            target = spec.targets[endpoint.target]
            if target.kind.environment is not EnvironmentKind.VENV:
                continue
            for deployment in endpoint.deployments.values():
                if deployment.environment is None:
                    continue
                local = digests.setdefault(target.type, {})
                if deployment.environment not in local:
                    local[deployment.environment] = environment_digest(spec, deployment.environment)
                    wanted.append(self.ref(deployment.environment, local[deployment.environment]))
                refs.setdefault(target.name, {})[deployment.environment] = self.ref(
                    deployment.environment, local[deployment.environment])
        return digests, refs, frozenset(ref for ref in wanted if self.complete(ref))

    # -- build -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One build or collection at a time across processes.

        The build commands inherit the lock's descriptor: if we are killed, an orphaned pip still
        holds the lock, so the next build waits for it to finish before removing its folder.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_fd = handle.fileno()
            try:
                yield
            finally:
                self._lock_fd = None
                fcntl.flock(handle, fcntl.LOCK_UN)

    def build(self, environment: str, data: Any = None) -> str:
        """Build the venv of ``environment`` (no-op when complete); returns its ref.

        ``data`` is the plan step's data; a ``digest`` in it must match the environment now,
        otherwise the requirements changed since the plan and the build is refused.
        """
        digest = environment_digest(self.spec, environment)
        planned = getattr(data, "digest", None)  # the plan's BuildData, when a plan asks
        if planned and planned != digest:
            raise BuildError(f"environment '{environment}' changed since the plan was made "
                             f"({planned[:19]} planned, {digest[:19]} now); plan again")
        ref = self.ref(environment, digest)
        if self.complete(ref):
            return ref
        if self.spec.environments[environment].conda_file:
            raise BuildError(f"environment '{environment}' has a conda_file, which a local venv cannot install; "
                             "list its packages in a requirements file instead")
        with self._locked():
            if self.complete(ref):  # another process built it while we waited
                return ref
            self._remove_half_built()
            folder = self.path(ref)
            self.builds += 1
            try:
                self._create(environment, digest, folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return ref

    def _create(self, environment: str, digest: str, folder: Path) -> None:
        version = self.spec.environments[environment].python
        found = find_interpreter(version)
        if found is None:
            raise BuildError(f"environment '{environment}' asks for Python {version}, which is not installed "
                             f"here (found: {', '.join(_available_pythons()) or 'none'}); install it "
                             f"(e.g. `uv python install {version}`) or change environments.{environment}.python")
        interpreter, _ = found
        uv = _which_uv()
        python = folder / "bin" / "python"
        # without uv, the running pip installs into the venv (pip --python): that spares ensurepip's seconds
        pip = [sys.executable, "-m", "pip", "--python", str(python)] if find_spec("pip") else [str(python), "-m", "pip"]
        self.progress(f"creating venv {folder.name} with Python {version} ({'uv' if uv else 'venv + pip'})")
        if uv:
            create = [uv, "venv", "--no-config", "--python", str(interpreter), str(folder)]
        else:
            create = [str(interpreter), "-m", "venv", *(["--without-pip"] if find_spec("pip") else []), str(folder)]
        self._run(environment, "creating the venv", create)
        service = folder / "mlops-service-requirements.txt"
        service.write_text(service_requirements())
        requirements = [service]
        wanted = self.spec.environments[environment].requirements
        if wanted:
            requirements.append(self.spec.root / wanted)
        count = sum(1 for path in requirements for line in path.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#"))
        self.progress(f"installing {count} requirements")
        files = [arg for path in requirements for arg in ("-r", str(path))]
        if uv:
            command = [uv, "pip", "install", "--no-config", "--python", str(python), *files]
        else:
            command = [*pip, "install", "--no-input", "--progress-bar", "off", *files]
        self._run(environment, "installing requirements", command)
        self._link_pipeline(folder)
        self.progress("checking that the scoring service imports")
        self._run(environment, "importing the scoring service", [str(python), "-c", "import pipeline.server.app"])
        marker = folder / f".{MARKER}.tmp"
        marker.write_text(json.dumps({"environment": environment, "digest": digest, "python": version,
                                      "mlops": pipeline.__version__}, indent=2) + "\n")
        marker.rename(folder / MARKER)  # the commit point
        self.progress(f"venv {folder.name} ready")

    @staticmethod
    def _link_pipeline(folder: Path) -> None:
        """Make the running ``pipeline`` importable: a .pth file naming a folder that holds only a link to it.

        Installing mlops into every venv would pull its CLI dependencies (docker, kubernetes, git...)
        and copy code that then goes stale; pointing the .pth straight at the package's parent would
        expose that whole folder (a site-packages, for a non-editable install) and break isolation.
        """
        source = folder / SOURCE_DIR
        source.mkdir()
        (source / "pipeline").symlink_to(_pipeline_dir(), target_is_directory=True)
        site_packages = next((folder / "lib").glob("python*/site-packages"))
        (site_packages / "mlops-pipeline.pth").write_text(f"{source}\n")

    def _run(self, environment: str, step: str, command: list[str]) -> None:
        """Run one build command, passing its output to ``progress``; its error lines make the error."""
        lines: deque[str] = deque(maxlen=200)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)  # the venv must see only itself (and the linked pipeline)
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=self.root, stdin=subprocess.DEVNULL,
                              pass_fds=() if self._lock_fd is None else (self._lock_fd,)) as process:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip()
                if line:
                    lines.append(line)
                    self.progress(line)
        if process.returncode != 0:
            raise BuildError(f"building the venv of environment '{environment}' failed while {step} "
                             f"(exit code {process.returncode}):\n" + "\n".join(_error_lines(list(lines))))

    # -- garbage ---------------------------------------------------------------------------

    def built(self) -> list[str]:
        """Refs of the complete venvs on disk."""
        if not self.root.is_dir():
            return []
        refs = []
        for folder in sorted(self.root.iterdir()):
            name, _, tag = folder.name.rpartition("-")
            if folder.is_dir() and name and (folder / MARKER).is_file():
                refs.append(f"{REF_PREFIX}{name}:{tag}")
        return refs

    def _remove_half_built(self) -> None:
        """Remove folders without a marker: killed builds (call with the lock held: none is in progress)."""
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and not (folder / MARKER).is_file():
                self.progress(f"removing the half-built {folder.name} (an interrupted build)")
                shutil.rmtree(folder)

    def collect_garbage(self, keep_refs: set[str]) -> list[str]:
        """Remove the venvs not in ``keep_refs`` and any half-built folder; returns the refs removed."""
        if not self.root.is_dir():
            return []
        with self._locked():
            self._remove_half_built()
            removed = [ref for ref in self.built() if ref not in keep_refs]
            for ref in removed:
                self.progress(f"removing venv {self.path(ref).name}")
                shutil.rmtree(self.path(ref))
        return removed
