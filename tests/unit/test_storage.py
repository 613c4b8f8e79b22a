"""Lake URIs on the file systems Python code on executors and ranks reads through (no Spark here)."""
from __future__ import annotations

from visionlake.lake import filesystem


def test_lake_uris_open_on_the_matching_pyarrow_file_system(tmp_path):
    from pyarrow import fs as pafs

    for uri in (f"file:{tmp_path}/x.parquet", f"file://{tmp_path}/x.parquet", f"{tmp_path}/x.parquet"):
        system, path = filesystem.pyarrow_filesystem(uri)
        assert isinstance(system, pafs.LocalFileSystem) and path == f"{tmp_path}/x.parquet"
    system, path = filesystem.pyarrow_filesystem("mock:///bucket/lake/x.parquet")  # pyarrow's in-memory store
    assert isinstance(system, pafs._MockFileSystem) and path == "bucket/lake/x.parquet"  # other schemes: pyarrow
