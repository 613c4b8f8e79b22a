"""The lake's commit primitive on the local file system: a file is created whole, and only if it is absent, also when
two processes create it at the same moment (no Spark here: the local path of ``HadoopStorage.publish_text``)."""
from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pytest

from visionlake.lake import filesystem
from visionlake.lake.filesystem import TargetExistsError, create_local_file_exclusively

ROUNDS = 200


def _race(folder: str, name: str, barrier, results) -> None:
    """One of two racing creators: per round, wait for the other, then create the round's file."""
    won = []
    for round_ in range(ROUNDS):
        barrier.wait()
        try:
            create_local_file_exclusively(f"{folder}/v{round_:06d}.json", f'{{"writer": "{name}"}}')
            won.append(round_)
        except TargetExistsError:
            pass
    results.put((name, won))


def test_exactly_one_of_two_racing_processes_creates_each_file(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    creators = [context.Process(target=_race, args=(str(tmp_path), name, barrier, results)) for name in "ab"]
    for creator in creators:
        creator.start()
    won = dict(results.get(timeout=120) for _ in creators)
    for creator in creators:
        creator.join(timeout=30)

    assert sorted(won["a"] + won["b"]) == list(range(ROUNDS)), "every file has exactly one creator"
    for name, rounds in won.items():
        for round_ in rounds:
            assert (tmp_path / f"v{round_:06d}.json").read_text() == f'{{"writer": "{name}"}}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v{r:06d}.json" for r in range(ROUNDS)], \
        "no temporary file is left behind"


@pytest.fixture
def competitor_names_first(monkeypatch):
    """Another writer that creates the target at the worst moment: just before this one's file gets its name
    (whatever names it: a link, a rename, a replace, or an exclusive open)."""
    def first(real, target_of):
        def call(*args, **kwargs):
            target = target_of(*args)
            if target.endswith(".json") and not os.path.exists(target):
                Path(target).write_text('{"writer": "competitor"}')
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(filesystem.os, "link", first(os.link, lambda source, target: target))
    monkeypatch.setattr(filesystem.os, "rename", first(os.rename, lambda source, target: target))
    monkeypatch.setattr(filesystem.os, "replace", first(os.replace, lambda source, target: target))
    monkeypatch.setattr(filesystem.os, "open", first(os.open, lambda path, flags, *mode: path))


def test_a_file_another_writer_creates_just_before_ours_is_named_is_never_replaced(tmp_path, competitor_names_first):
    target = tmp_path / "_manifests" / "v000002.json"
    with pytest.raises(TargetExistsError, match="another writer created it first"):
        create_local_file_exclusively(str(target), '{"writer": "me"}')
    assert target.read_text() == '{"writer": "competitor"}'
    assert [p.name for p in target.parent.iterdir()] == ["v000002.json"]


def test_an_existing_file_is_never_replaced(tmp_path):
    target = tmp_path / "v000001.json"
    create_local_file_exclusively(str(target), "first")
    with pytest.raises(TargetExistsError, match="v000001.json exists"):
        create_local_file_exclusively(str(target), "second")
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["v000001.json"]


def test_without_hard_links_the_create_is_still_exclusive(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(filesystem.os, "link", no_links)
    target = tmp_path / "v000001.json"
    create_local_file_exclusively(str(target), "first")
    with pytest.raises(TargetExistsError):
        create_local_file_exclusively(str(target), "second")
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["v000001.json"]


def test_an_unwritable_folder_is_a_storage_error_naming_the_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(filesystem.StorageError, match="cannot write .*not-a-folder/v000001.json"):
        create_local_file_exclusively(str(blocker / "v000001.json"), "text")


def test_the_commit_s_temporary_files_are_told_from_data(tmp_path, monkeypatch):
    assert filesystem.is_temporary(".tmp-0123abcd") and filesystem.is_temporary("..tmp-0123abcd.crc")  # Hadoop's
    assert not filesystem.is_temporary("v000001.json") and not filesystem.is_temporary("tmp-x")
    # What create_local_file_exclusively writes before it names the file is such a temporary file.
    written = []
    link = os.link
    monkeypatch.setattr(filesystem.os, "link", lambda source, target: written.append(source) or link(source, target))
    create_local_file_exclusively(str(tmp_path / "v000001.json"), "{}")
    assert len(written) == 1 and filesystem.is_temporary(os.path.basename(written[0]))


def test_lake_uris_open_on_the_matching_pyarrow_file_system(tmp_path):
    from pyarrow import fs as pafs

    for uri in (f"file:{tmp_path}/x.parquet", f"file://{tmp_path}/x.parquet", f"{tmp_path}/x.parquet"):
        system, path = filesystem.pyarrow_filesystem(uri)
        assert isinstance(system, pafs.LocalFileSystem) and path == f"{tmp_path}/x.parquet"
    system, path = filesystem.pyarrow_filesystem("mock:///bucket/lake/x.parquet")  # pyarrow's in-memory store
    assert isinstance(system, pafs._MockFileSystem) and path == "bucket/lake/x.parquet"  # other schemes: pyarrow
