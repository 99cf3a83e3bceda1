"""The local base image: a minimal Debian root file system with the distribution's Python.

No image registry is needed: ``debootstrap --variant=minbase`` installs ``BASE_PACKAGES`` of this
machine's suite from the apt mirror its apt sources name, and the tree is imported into the
engine. The tag names the content (suite and package list), so a change of either is a new base.
The root file system is kept as a tarball in the cache folder: the next engine (a fresh CI
machine, a new data root) imports it in seconds instead of bootstrapping again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import BuildError, MlopsError

BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPOSITORY = "mlops-base"
# The Python each suite ships as python3 (an environment asking for another version needs base_image).
SUITE_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13", "jammy": "3.10", "noble": "3.12"}


def cache_dir() -> Path:
    """``$MLOPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlops``, else ``~/.cache/mlops``."""
    if os.environ.get("MLOPS_CACHE_DIR"):
        return Path(os.environ["MLOPS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops"


def host_suite(os_release: Path = Path("/etc/os-release")) -> str | None:
    """This machine's Debian/Ubuntu suite (``bookworm``), or None elsewhere."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    match = re.search(r'^VERSION_CODENAME="?([a-z]+)"?$', text, re.MULTILINE)
    return match.group(1) if match else None


def apt_mirror(suite: str, sources: list[Path] | None = None) -> str:
    """The mirror URI this machine's apt sources use for ``suite`` (deb822 or one-line format)."""
    if sources is None:
        sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and suite in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                return parts[1]
    raise MlopsError(f"no apt source for '{suite}' in /etc/apt/sources.list(.d): the local base image is "
                     "installed from this machine's Debian mirror")


def base_tag(suite: str, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    """``mlops-base:<suite>-<12 hex>``: the hash covers the suite and the package list."""
    digest = hashlib.sha256(f"{suite}\0{' '.join(sorted(packages))}".encode()).hexdigest()[:12]
    return f"{BASE_REPOSITORY}:{suite}-{digest}"


def default_base() -> str | None:
    """The local base for this machine's suite, or None when this is not a Debian/Ubuntu machine."""
    suite = host_suite()
    return base_tag(suite) if suite else None


def image_exists(client, ref: str) -> bool:
    """The engine has ``ref`` (pulls nothing)."""
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _unmount_below(root: Path) -> None:
    """Unmount what debootstrap left mounted inside ``root`` (proc, sys) after a failure."""
    prefix = str(root.resolve())
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def bootstrap_rootfs(suite: str, tarball: Path, progress=print) -> None:
    """debootstrap ``suite`` into a temporary folder and write its tarball (atomically) to ``tarball``."""
    if shutil.which("debootstrap") is None:
        raise MlopsError("building the local base image needs debootstrap: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise MlopsError("building the local base image needs root (debootstrap creates device files); "
                         "run `sudo mlops images base` once: later builds reuse its cached image")
    mirror = apt_mirror(suite)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlops-base-"))
    rootfs = work / "rootfs"
    try:
        progress(f"debootstrap {suite} from {mirror} ({', '.join(BASE_PACKAGES)}); about a minute")
        result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                                 suite, str(rootfs), mirror], capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BuildError(f"debootstrap {suite} from {mirror} failed:\n{tail}")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.replace(tarball)
    finally:
        _unmount_below(rootfs)
        shutil.rmtree(work, ignore_errors=True)


def ensure_base(client, suite: str | None = None, progress=print) -> str:
    """Make the local base image exist on ``client``'s engine: present, imported from the cache, or bootstrapped.

    Returns its tag.
    """
    suite = suite or host_suite()
    if suite is None:
        raise MlopsError("the local base image is built from Debian/Ubuntu packages, and this machine is "
                         "neither; set base_image on the environment (for example python:3.11-slim)")
    tag = base_tag(suite)
    if image_exists(client, tag):
        return tag
    tarball = cache_dir() / "base" / f"{tag.split(':', 1)[1]}.tar"
    if not tarball.exists():
        bootstrap_rootfs(suite, tarball, progress)
    else:
        progress(f"importing the cached base {tarball}")
    repository, _, version = tag.partition(":")
    client.api.import_image_from_file(
        str(tarball), repository=repository, tag=version,
        changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8",
                 'CMD ["python3"]', f"LABEL mlops.base={suite}"])
    if not image_exists(client, tag):
        raise BuildError(f"importing {tarball} as {tag} failed (delete the file to bootstrap it again)")
    return tag
