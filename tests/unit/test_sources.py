"""Raw sources without Spark: the local listing, archive expansion in memory, and the paths Spark's scan reports."""
from __future__ import annotations

import io
import tarfile
import zipfile

import pandas as pd
import pytest

from visionlake.ingest.sources import expand_archive, expand_archive_batches, list_local_files, scan_path_form


def test_the_local_listing_finds_every_file_with_its_size_and_skips_hidden_names(tmp_path):
    (tmp_path / "cats" / "deep").mkdir(parents=True)
    (tmp_path / "cats" / "a.png").write_bytes(b"1234")
    (tmp_path / "cats" / "deep" / "b.png").write_bytes(b"")
    (tmp_path / "cats" / ".c.png").write_bytes(b"hidden")
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "d.png").write_bytes(b"x")
    assert sorted(list_local_files(str(tmp_path))) == [(str(tmp_path / "cats" / "a.png"), 4),
                                                       (str(tmp_path / "cats" / "deep" / "b.png"), 0)]
    assert list(list_local_files(str(tmp_path / "cats" / "a.png"))) == [(str(tmp_path / "cats" / "a.png"), 4)]


@pytest.mark.parametrize("listed, scanned", [
    ("file:///data/raw/a%20b.png", "file:/data/raw/a b.png"),
    ("file:/data/raw/a.png", "file:/data/raw/a.png"),
    ("hdfs://nn:8020/raw/caf%C3%A9.png", "hdfs://nn:8020/raw/café.png"),
])
def test_listed_paths_take_the_form_the_binary_file_scan_reports(listed, scanned):
    assert scan_path_form(listed) == scanned


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        folder = tarfile.TarInfo("parts/bolts")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("nuts/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


MEMBERS = {"parts/bolts/a.png": b"aaaa", "parts/bolts/._a.png": b"mac", "parts/_meta/x": b"m",
           "parts/nuts/big.png": b"b" * 20}


@pytest.mark.parametrize("name, content", [("file:/d/parts.tar.gz", _tar(MEMBERS)),
                                           ("file:/d/parts.tar", _tar(MEMBERS, "w")),
                                           ("file:/d/parts.ZIP", _zip(MEMBERS))],
                         ids=["tar.gz", "tar", "zip"])  # the archives hold timestamps: ids stay the same per worker
def test_archive_members_become_records_and_oversized_ones_errors(name, content):
    records = expand_archive(name, content, max_member_bytes=10)
    assert sorted(records) == [
        (f"{name}!/parts/bolts/a.png", b"aaaa", 4, None, None, None),
        (f"{name}!/parts/nuts/big.png", None, 20, None, None, "file_too_large: 20 bytes > limit 10")]


def test_a_damaged_archive_keeps_the_members_read_before_the_damage_and_is_quarantined():
    content = _tar({"a/one.png": b"1" * 600, "a/two.png": b"2" * 5000}, "w")
    records = expand_archive("file:/d/cut.tar", content[:3000], max_member_bytes=10_000)  # cut inside two.png
    assert records == [("file:/d/cut.tar!/a/one.png", b"1" * 600, 600, None, None, None),
                       ("file:/d/cut.tar", None, 3000, None, None,
                        "unreadable: corrupt archive: unexpected end of data")]


def test_archive_batches_expand_each_archive_and_read_the_ones_listed_without_bytes(tmp_path):
    on_disk = tmp_path / "b.zip"
    on_disk.write_bytes(_zip({"nuts/n.png": b"nn"}))
    batch = pd.DataFrame({"source_path": ["file:/d/a.tar", f"file:{on_disk}", f"file:{tmp_path}/missing.zip"],
                          "content": [_tar({"x/y.png": b"yy"}, "w"), None, None]})
    (frame,) = list(expand_archive_batches(iter([batch]), max_member_bytes=100))
    assert list(frame.columns) == ["source_path", "content", "length", "label_hint", "split_hint", "error"]
    rows = frame.to_dict("records")
    assert [(r["source_path"], r["content"], r["length"], r["error"]) for r in rows] == [
        ("file:/d/a.tar!/x/y.png", b"yy", 2, None),
        (f"file:{on_disk}!/nuts/n.png", b"nn", 2, None),
        (f"file:{tmp_path}/missing.zip", None, 0, "unreadable: No such file or directory")]
