"""Lake locations: which are local, and the form each library gets."""
from __future__ import annotations

import os

import pytest

from visionlake.uris import file_uri, has_scheme, is_local, local_path


@pytest.mark.parametrize("location, local, scheme, path", [
    ("/lake", True, False, "/lake"),
    ("lake/demo", True, False, "lake/demo"),
    ("file:/lake", True, True, "/lake"),        # how Spark writes local files
    ("file:///lake", True, True, "/lake"),      # how users and petastorm write them
    ("hdfs://nn:8020/lake", False, True, "hdfs://nn:8020/lake"),
    ("s3a://bucket/lake", False, True, "s3a://bucket/lake"),
])
def test_each_location_is_local_or_not_and_has_one_local_path(location, local, scheme, path):
    assert (is_local(location), has_scheme(location)) == (local, scheme)
    if local:
        assert local_path(location) == path
    else:
        assert local_path(location) == location  # only file: is stripped


def test_file_uris_are_absolute_with_three_slashes():
    assert file_uri("file:/lake/x.parquet") == file_uri("/lake/x.parquet") == "file:///lake/x.parquet"
    assert file_uri("lake") == "file://" + os.path.abspath("lake")


def test_a_listed_local_record_is_read_back_from_its_file_uri(tmp_path):
    from visionlake.ingest.sources import disk_path, read_local_bytes

    image = tmp_path / "circle" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"\x89PNG pixels")
    for uri in (f"file:{image}", f"file://{image}", str(image)):
        assert disk_path(uri) == str(image)
        assert read_local_bytes(uri) == b"\x89PNG pixels"
    assert disk_path("hdfs://nn:8020/raw/a.png") is None
