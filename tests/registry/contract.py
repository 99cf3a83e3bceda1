"""The contract every ``Registry`` adapter must pass.

A test module subclasses ``RegistryContract`` and provides two fixtures: ``registry`` (a fresh,
empty adapter) and ``tamper`` (a function ``tamper(registry, version, data)`` that overwrites the
stored bytes of the version's first file the way an attacker or a bad disk would on that backend).
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.errors import IntegrityError, InUseError, ReferenceNotFound
from pipeline.registry.base import derived_folder
from pipeline.registry.hashing import working_tree_digest


def model(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


class RegistryContract:
    def test_same_content_is_the_same_version(self, registry, tmp_path):
        first, created = registry.register("iris", model(tmp_path / "a", w="1", **{"sub/x": "2"}), flavor="sklearn")
        again, created_again = registry.register("iris", model(tmp_path / "b", w="1", **{"sub/x": "2"}),
                                                 flavor="sklearn")
        assert (first.version, created) == (1, True) and (again.version, created_again) == (1, False)
        assert first.digest == again.digest == working_tree_digest(tmp_path / "a").digest
        assert first.ref == "iris:1" and {f.path for f in first.files} == {"w", "sub/x"}

    def test_new_content_is_the_next_version(self, registry, tmp_path):
        registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
        second, created = registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn",
                                            description="retrained", tags={"owner": "ds"}, lineage={"commit": "abc"})
        assert (second.version, created) == (2, True)
        assert second.description == "retrained" and dict(second.tags) == {"owner": "ds"}
        assert second.lineage["commit"] == "abc" and second.flavor == "sklearn"
        back, created = registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
        assert (back.version, created) == (1, False)  # old content again is the old version

    def test_versions_are_listed_and_read(self, registry, tmp_path):
        for value in ("1", "2", "3"):
            registry.register("iris", model(tmp_path / "a", w=value), flavor="sklearn")
        registry.register("other", model(tmp_path / "b", w="1"), flavor="onnx")
        assert [v.version for v in registry.list_versions("iris")] == [1, 2, 3]
        assert registry.get("iris").version == 3 and registry.get("iris", 2).version == 2
        summaries = {s.name: s for s in registry.list_models()}
        assert set(summaries) == {"iris", "other"}
        assert (summaries["iris"].versions, summaries["iris"].latest) == (3, 3)
        with pytest.raises(ReferenceNotFound, match="iris:9"):
            registry.get("iris", 9)
        with pytest.raises(ReferenceNotFound):
            registry.get("nothing")
        assert registry.list_versions("nothing") == []

    def test_find_by_digest(self, registry, tmp_path):
        first, _ = registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
        second, _ = registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
        assert registry.find("iris", first.digest).version == 1
        assert registry.find("iris", second.digest).version == 2
        assert registry.find("iris", "sha256:" + "0" * 64) is None
        assert registry.find("other", first.digest) is None  # digests are looked up per model

    def test_materialize_gives_the_files_verified_and_read_only(self, registry, tmp_path):
        registry.register("iris", model(tmp_path / "a", w="weights", **{"sub/x": "2"}), flavor="sklearn")
        folder = registry.materialize("iris", 1)
        assert (folder / "w").read_text() == "weights" and (folder / "sub" / "x").read_text() == "2"
        assert working_tree_digest(folder).digest == registry.get("iris", 1).digest
        assert not (folder / "w").stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        assert registry.materialize("iris", 1) == folder  # reused
        out = registry.download("iris", 1, tmp_path / "out")
        assert (out / "w").read_text() == "weights"

    def test_a_version_in_use_cannot_be_deleted_or_archived(self, registry, tmp_path):
        registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
        registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
        registry.add_usage("iris/blue (being deployed)", "iris", 1)
        assert registry.users("iris", 1) == ["iris/blue (being deployed)"]
        with pytest.raises(InUseError, match="iris/blue"):
            registry.delete("iris", 1)
        with pytest.raises(InUseError):
            registry.archive("iris", 1)
        registry.set_usage({"iris/blue": ("iris", 2)})  # replaces every earlier record
        assert registry.users("iris", 1) == [] and registry.users("iris", 2) == ["iris/blue"]
        with pytest.raises(InUseError):
            registry.delete("iris", 2)
        registry.delete("iris", 1)
        assert [v.version for v in registry.list_versions("iris")] == [2]
        with pytest.raises(ReferenceNotFound):
            registry.get("iris", 1)
        registry.set_usage({})
        registry.archive("iris", 2)
        assert registry.list_versions("iris") == []
        assert [v.version for v in registry.list_versions("iris", include_archived=True)] == [2]

    def test_deleting_a_version_removes_its_copy_and_what_was_derived_from_it(self, registry, tmp_path):
        registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
        folder = registry.materialize("iris", 1)
        derived = derived_folder(folder)
        derived.mkdir()
        (derived / "linear.npz").write_text("x")
        registry.delete("iris", 1)
        assert not folder.exists() and not derived.exists()

    def test_deleted_version_numbers_are_never_reused(self, registry, tmp_path):
        registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
        registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
        registry.delete("iris", 2)
        again, created = registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
        assert (again.version, created) == (3, True)

    def test_tampered_bytes_are_refused_on_materialize(self, registry, tamper, tmp_path):
        version, _ = registry.register("iris", model(tmp_path / "a", w="weights"), flavor="sklearn")
        tamper(registry, version, b"evil")
        with pytest.raises(IntegrityError, match="does not match its digest"):
            registry.materialize("iris", 1)
        with pytest.raises(IntegrityError):
            registry.download("iris", 1, tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_a_materialized_copy_edited_in_place_is_rebuilt(self, registry, tmp_path):
        registry.register("iris", model(tmp_path / "a", w="weights"), flavor="sklearn")
        folder = registry.materialize("iris", 1)
        (folder / "w").chmod(0o644)
        (folder / "w").write_text("edited")
        assert (registry.materialize("iris", 1) / "w").read_text() == "weights"

    def test_versions_by_name_reads_many_models_at_once_archived_too(self, registry, tmp_path):
        for value in ("1", "2"):
            registry.register("iris", model(tmp_path / "a", w=value), flavor="sklearn")
        registry.register("other", model(tmp_path / "b", w="1"), flavor="onnx")
        registry.archive("iris", 1)
        found = registry.versions_by_name(["iris", "other", "nothing"])
        assert {name: [v.ref for v in versions] for name, versions in found.items()} == \
            {"iris": ["iris:1", "iris:2"], "other": ["other:1"], "nothing": []}
        assert found["iris"][0].archived and found["iris"][1].digest == registry.get("iris", 2).digest
        assert found["iris"] == registry.list_versions("iris", include_archived=True)  # files included
        assert registry.aliases("nothing") == {}
