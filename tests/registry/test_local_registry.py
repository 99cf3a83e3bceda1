"""The embedded registry on real files, SQLite and processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import IntegrityError, InUseError, MlopsError, ReferenceNotFound, UnsafePathError
from pipeline.registry import LocalRegistry
from pipeline.registry.hashing import sha256_file
from pipeline.registry.local import safe_relative


def model(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry")


def test_same_content_is_the_same_version(registry, tmp_path):
    first, created = registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    again, created_again = registry.register("iris", model(tmp_path / "b", w="1"), flavor="sklearn")
    assert (first.version, created) == (1, True)
    assert (again.version, created_again) == (1, False)


def test_changed_content_is_the_next_version(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    second, _ = registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn",
                                  tags={"owner": "ds"}, description="retrained")
    assert second.version == 2 and second.tags == {"owner": "ds"} and second.description == "retrained"
    assert registry.get("iris").version == 2
    assert [v.version for v in registry.list_versions("iris")] == [1, 2]


def test_digest_covers_names_not_only_contents(registry, tmp_path):
    one = registry.digest(model(tmp_path / "a", x="1"))
    renamed = registry.digest(model(tmp_path / "b", y="1"))
    assert one.digest != renamed.digest


def test_single_file_model(registry, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    version, _ = registry.register("tiny", path, flavor="onnx")
    assert [f.path for f in version.files] == ["model.onnx"]
    assert (registry.materialize("tiny", 1) / "model.onnx").read_bytes() == b"onnx"


def test_tampered_blob_is_refused(registry, tmp_path):
    version, _ = registry.register("iris", model(tmp_path / "a", w="weights"), flavor="sklearn")
    blob = registry._blob(version.files[0].digest)
    os.chmod(blob, 0o644)
    blob.write_text("evil")
    with pytest.raises(IntegrityError, match="does not match its digest"):
        registry.download("iris", 1, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.download-*")) == []
    with pytest.raises(IntegrityError):
        registry.materialize("iris", 1)


def test_a_materialized_copy_edited_in_place_is_rebuilt_not_served(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="weights"), flavor="sklearn")
    folder = registry.materialize("iris", 1)
    (folder / "w").chmod(0o644)
    (folder / "w").write_text("WEIGHTS")  # same size, other bytes
    assert (registry.materialize("iris", 1) / "w").read_text() == "weights"


def test_a_file_added_to_a_materialized_copy_is_not_served(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="weights"), flavor="sklearn")
    folder = registry.materialize("iris", 1)
    folder.chmod(0o755)
    (folder / "score.py").write_text("import os")
    assert not (registry.materialize("iris", 1) / "score.py").exists()


def test_download_refuses_a_folder_that_holds_files(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="weights"), flavor="sklearn")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(MlopsError, match="not an empty folder"):
        registry.download("iris", 1, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_materialized_copy_is_verified_and_read_only(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="weights", **{"sub": ""}), flavor="sklearn")
    folder = registry.materialize("iris", 1)
    assert (folder / "w").read_text() == "weights"
    assert not os.access(folder / "w", os.W_OK) or os.geteuid() == 0
    assert oct((folder / "w").stat().st_mode)[-3:] == "444"


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_traversal_paths_are_refused(bad):
    with pytest.raises(UnsafePathError):
        safe_relative(bad)


def test_stored_file_list_with_traversal_is_refused_on_read(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    db = sqlite3.connect(registry.root / "registry.db")
    db.execute("UPDATE files SET path='../../outside' WHERE name='iris'")
    db.commit()
    with pytest.raises(UnsafePathError):
        registry.download("iris", 1, tmp_path / "out")
    assert not (tmp_path / "outside").exists()


def test_symlink_pointing_outside_the_model_is_refused(registry, tmp_path):
    (tmp_path / "secret").write_text("s")
    folder = model(tmp_path / "a", w="1")
    (folder / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafePathError, match="symlink that points outside"):
        registry.register("iris", folder, flavor="sklearn")


def _register(root: str, name: str, source: str, queue) -> None:
    version, created = LocalRegistry(Path(root)).register(name, Path(source), flavor="sklearn")
    queue.put((version.version, version.digest, created))


def test_concurrent_registration_from_two_processes(tmp_path):
    root = tmp_path / "registry"
    LocalRegistry(root)
    sources = [model(tmp_path / f"m{i}", w=str(i) * 100_000) for i in range(4)]
    sources.append(model(tmp_path / "dup", w="0" * 100_000))  # the same content as m0
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_register, args=(str(root), "iris", str(s), queue)) for s in sources]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    results = [queue.get(timeout=5) for _ in processes]
    by_digest = {}
    for version, digest, _ in results:
        by_digest.setdefault(digest, set()).add(version)
    assert all(len(v) == 1 for v in by_digest.values())  # same content → one version
    assert sorted(v.pop() for v in by_digest.values()) == [1, 2, 3, 4]
    assert [v.version for v in LocalRegistry(root).list_versions("iris")] == [1, 2, 3, 4]


def test_delete_is_refused_while_in_use_and_allowed_after(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    registry.set_usage({"local:iris/blue": ("iris", 1)})
    with pytest.raises(InUseError, match="local:iris/blue"):
        registry.delete("iris", 1)
    with pytest.raises(InUseError):
        registry.archive("iris", 1)
    registry.set_usage({})
    registry.delete("iris", 1)
    with pytest.raises(ReferenceNotFound):
        registry.get("iris", 1)


def test_deleted_version_numbers_are_not_reused(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    registry.delete("iris", 1)
    assert registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")[0].version == 2


def test_archive_hides_from_latest(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
    registry.archive("iris", 2)
    assert registry.get("iris").version == 1
    assert registry.get("iris", 2).archived


def test_garbage_collection_keeps_shared_blobs(registry, tmp_path):
    one, _ = registry.register("iris", model(tmp_path / "a", shared="s", own="1"), flavor="sklearn")
    registry.register("iris", model(tmp_path / "b", shared="s", own="2"), flavor="sklearn")
    blobs = {f.path: registry._blob(f.digest) for f in one.files}
    registry.delete("iris", 1)
    assert not blobs["own"].exists() and blobs["shared"].exists()


def test_unchanged_files_are_not_read_again(registry, tmp_path, monkeypatch):
    folder = model(tmp_path / "a", w="1" * 1000, x="2")
    first = registry.digest(folder)
    reads = []
    monkeypatch.setattr("pipeline.registry.hashing.sha256_file", lambda path: reads.append(path) or sha256_file(path))
    assert registry.digest(folder) == first and reads == []
    (folder / "x").write_text("3")
    registry.digest(folder)
    assert [p.name for p in reads] == ["x"]


def test_lineage_is_stored_with_the_version(registry, tmp_path):
    version, _ = registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn",
                                   lineage={"commit": "abc", "dirty": False})
    assert json.loads(json.dumps(registry.get("iris", 1).lineage)) == {"commit": "abc", "dirty": False}
    assert version.lineage["commit"] == "abc"
