"""Model hashing speed: first-time hashing against coreutils `sha256sum`, and unchanged re-hashing.

    python bench/hash.py [--size-gb 1] [--unchanged-gb 10]

1. A model folder of --size-gb (files of mixed sizes) hashed cold by the registry (cache empty)
   and by `sha256sum` on the same files, interleaved, best of 3: throughput and the ratio.
2. A folder of --unchanged-gb (sparse files: no disk used) hashed once, then re-hashed with
   nothing changed: the time that every `mlops plan` pays per model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.registry.hashing import HashCache, digest_content

GB = 1024**3


def make_folder(root: Path, total: int, sparse: bool) -> list[Path]:
    root.mkdir(parents=True)
    sizes = [total // 2, total // 4, total // 8] + [total // 8 // 29] * 29  # one big, some medium, many small
    files = []
    for index, size in enumerate(sizes):
        path = root / f"part-{index:03d}.bin"
        if sparse:
            with path.open("wb") as handle:
                handle.truncate(size)
        else:
            with path.open("wb") as handle:
                block = os.urandom(4 * 1024 * 1024)
                for offset in range(0, size, len(block)):
                    handle.write(block[: min(len(block), size - offset)])
        files.append(path)
    return files


def best_of(runs: int, action) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--unchanged-gb", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-hash-", dir=os.environ.get("TMPDIR")))
    try:
        files = make_folder(work / "model", int(args.size_gb * GB), sparse=False)
        size = sum(f.stat().st_size for f in files)
        ours, coreutils = [], []
        for _ in range(3):  # interleaved, so both see the same machine load and page cache
            ours.append(best_of(1, lambda: digest_content(work / "model", HashCache(None))))
            coreutils.append(best_of(1, lambda: subprocess.run(["sha256sum", *map(str, files)], check=True,
                                                                stdout=subprocess.DEVNULL)))
        ours_gbs, core_gbs = size / min(ours) / GB, size / min(coreutils) / GB

        make_folder(work / "big", int(args.unchanged_gb * GB), sparse=True)
        cache = HashCache(work / "hashcache.db")
        started = time.perf_counter()
        digest_content(work / "big", cache)
        cold = time.perf_counter() - started
        warm = best_of(3, lambda: digest_content(work / "big", cache))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| measure | mlops | sha256sum | ratio (mlops / sha256sum) | target |")
    print("|---|---:|---:|---:|---|")
    print(f"| first-time hashing, {args.size_gb:g} GB | {ours_gbs:.2f} GB/s | {core_gbs:.2f} GB/s | "
          f"{ours_gbs / core_gbs:.2f} | ≥ 0.9 |")
    print(f"| re-hash of {args.unchanged_gb:g} GB, nothing changed | {warm * 1000:.1f} ms | | | ≤ 1 s |")
    print(f"| first hash of those {args.unchanged_gb:g} GB (sparse) | {cold:.1f} s | | | |")


if __name__ == "__main__":
    main()
