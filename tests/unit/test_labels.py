import re
from collections import Counter

import pytest

from visionlake.ingest import labels as L
MNIST = re.compile(r"(?P<label>[a-z]+)_\d+\.png")


def test_folder_label_is_the_first_folder_below_the_source_root():
    assert L.label_from_path("file:/data/raw/cats/a.png", "folder", root="/data/raw") == "cats"
    assert L.label_from_path("file:/data/raw/cats/2024/scans/a.png", "folder", root="/data/raw") == "cats"
    assert L.label_from_path("file:/data/raw/a.png", "folder", root="/data/raw") is None


def test_split_folders_archives_and_archive_wrappers_are_not_classes():
    assert L.label_from_path("file:/d/raw/train/cats/x/a.png", "folder", root="/d/raw",
                             split_folders=["train", "test"]) == "cats"
    assert L.label_from_path("file:/d/raw/train/cats/a.png", "folder", root="/d/raw") == "train"  # split.mode=hash
    assert L.label_from_path("file:/d/parts.tar.gz!/parts/bolts/x.jpg", "folder", root="/d/parts.tar.gz") == "bolts"
    assert L.label_from_path("file:/d/raw/b1.zip!/nuts/x.jpg", "folder", root="/d/raw") == "nuts"
    assert L.label_from_path("file:/d/raw/nuts/b1.zip!/x/y.jpg", "folder", root="/d/raw") == "nuts"


def test_parent_folder_keeps_the_folder_that_holds_the_file():
    assert L.label_from_path("file:/data/raw/cats/2024/scans/a.png", "parent_folder", root="/data/raw") == "scans"
    member = "file:/data/parts.tar.gz!/parts/bolts/x.jpg"
    assert L.label_from_path(member, "parent_folder", root="/data/parts.tar.gz") == "bolts"
    assert L.label_from_path("file:/data/raw/a.png", "parent_folder", root="/data/raw") is None


def test_regex_label_reads_the_file_name_inside_archives():
    member = "file:/d/mnist_png.tar.gz!/mnist/train/seven_123.png"
    assert L.label_from_path(member, "regex", MNIST) == "seven"
    assert L.label_from_path("hdfs://nn/x/README.txt", "regex", MNIST) is None


def test_split_from_the_nearest_split_folder():
    names = {"train": "train", "testing": "test"}
    assert L.split_from_path("file:/d/mnist.tar!/mnist/train/one_1.png", names) == "train"
    assert L.split_from_path("s3a://b/testing/cats/c.png", names) == "test"
    assert L.split_from_path("file:/d/cats/c.png", names) is None


def _hash(first_twelve: str, next_twelve: str = "000000000000") -> str:
    """A content hash whose leading hex digits are chosen: the first 12 are the split's draw, the next 12 the
    val-from-train draw (each read as a fraction of 16**12)."""
    return first_twelve + next_twelve + "0" * 40


@pytest.mark.parametrize("first_twelve, fraction, split", [
    ("000000000000", 0.0, "train"),
    ("a00000000000", 0.625, "train"),
    ("b40000000000", 0.703125, "val"),      # just past train's 0.7
    ("e00000000000", 0.875, "val"),
    ("e80000000000", 0.90625, "test"),      # just past train + val = 0.9
    ("ffffffffffff", 1 - 16 ** -12, "test"),
])
def test_hash_split_is_the_hash_prefix_as_a_fraction_against_the_cumulative_ratios(first_twelve, fraction, split):
    content_hash = _hash(first_twelve, "ffffffffffff")  # the val-from-train draw plays no part here
    assert L.hash_fraction(content_hash) == fraction
    assert L.assign_split(content_hash, {"train": 0.7, "val": 0.2, "test": 0.1}) == split
    assert L.assign_split(content_hash, {"test": 0.1, "val": 0.2, "train": 0.7}) == split  # order of the mapping


def test_hash_split_gives_a_fraction_past_the_ratios_to_the_last_split_with_a_share():
    assert L.assign_split(_hash("f00000000000"), {"train": 0.6, "val": 0.3}) == "val"  # 0.9375 > 0.6 + 0.3
    assert L.assign_split(_hash("f00000000000"), {"train": 0.9, "val": 0.0, "test": 0.0}) == "train"


def test_hash_split_follows_the_ratios_over_many_images():
    import hashlib
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    counts = Counter(L.assign_split(h, {"train": 0.7, "val": 0.2, "test": 0.1}) for h in hashes)
    assert abs(counts["train"] / 20000 - 0.7) < 0.02 and abs(counts["test"] / 20000 - 0.1) < 0.02


def test_val_from_train_is_drawn_from_the_second_slice_of_the_hash_and_only_for_train():
    assert L.hash_fraction(_hash("000000000000", "100000000000"), salt=1) == 0.0625
    assert L.assign_source_split("train", _hash("000000000000", "100000000000"), 0.1) == "val"    # 0.0625 < 0.1
    assert L.assign_source_split("train", _hash("ffffffffffff", "100000000000"), 0.1) == "val"    # first slice: no part
    assert L.assign_source_split("train", _hash("000000000000", "200000000000"), 0.1) == "train"  # 0.125 >= 0.1
    assert L.assign_source_split("train", _hash("000000000000", "100000000000"), 0.0) == "train"
    assert L.assign_source_split("test", _hash("000000000000", "000000000000"), 0.1) == "test"
    assert L.assign_source_split("val", _hash("000000000000", "000000000000"), 0.1) == "val"


def test_label_names_never_renumber():
    assert L.merge_label_names([], ["10", "2", "cat"]) == ["2", "10", "cat"]
    assert L.merge_label_names(["b", "a"], ["a", "c", "b"]) == ["b", "a", "c"]


def test_path_parts_drop_the_scheme_and_host_and_open_archive_members():
    assert L.path_parts("hdfs://nn:8020/d/b.tar.gz!/c/x.png") == ["d", "b.tar.gz", "c", "x.png"]
    assert L.path_parts("s3a://bucket/k/v.png") == ["k", "v.png"]
    for path in ("file:/x/y.png", "file:///x/y.png", "/x/y.png"):
        assert L.path_parts(path) == ["x", "y.png"]


def _plan(tmp_path, *overrides: str):
    from visionlake.config import load_config
    from visionlake.ingest.decode import DecodePlan

    return DecodePlan(load_config(None, ["ingest.source.uri=/raw", *overrides], base_dir=str(tmp_path)).ingest,
                      ("cats", "dogs"))


def test_a_record_s_label_is_its_manifest_hint_else_its_path(tmp_path):
    from visionlake.ingest.decode import raw_label

    plan = _plan(tmp_path)
    assert plan.label_pattern is None  # folder labels need no pattern
    assert raw_label("file:/raw/cats/a.png", " dogs ", plan, None) == "dogs"  # the manifest's, stripped
    for no_hint in (None, float("nan"), "  "):
        assert raw_label("file:/raw/cats/a.png", no_hint, plan, None) == "cats"
    assert raw_label("file:/raw/train/cats/a.png", None, plan, None) == "train"  # split.mode=hash: a class folder
    by_source = _plan(tmp_path, "ingest.split.mode=source")
    assert raw_label("file:/raw/train/cats/a.png", None, by_source, None) == "cats"  # split folders are skipped


def test_regex_labels_compile_the_configured_pattern(tmp_path):
    from visionlake.ingest.decode import raw_label

    plan = _plan(tmp_path, "ingest.label.source=regex", r"ingest.label.pattern=(?P<label>[a-z]+)_\d+\.png")
    assert plan.label_pattern.pattern == r"(?P<label>[a-z]+)_\d+\.png"
    assert raw_label("file:/raw/x/seven_12.png", None, plan, plan.label_pattern) == "seven"
    assert raw_label("file:/raw/x/README.txt", None, plan, plan.label_pattern) is None


def test_label_discovery_lists_each_name_once_sorted_without_unlabelled_records(tmp_path):
    import pandas as pd

    from visionlake.ingest.decode import discover_label_names

    frame = pd.DataFrame({"source_path": ["file:/raw/dogs/a.png", "file:/raw/cats/b.png", "file:/raw/dogs/c.png",
                                          "file:/raw/loose.png", "file:/raw/x/d.png"],
                          "label_hint": [None, None, None, None, "birds"]})
    assert discover_label_names(frame, _plan(tmp_path)).to_dict("list") == {"label_name": ["birds", "cats", "dogs"]}
