import re
from collections import Counter

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


def test_hash_split_is_deterministic_and_follows_the_ratios():
    import hashlib
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    ratios = {"train": 0.7, "val": 0.2, "test": 0.1}
    counts = Counter(L.assign_split(h, ratios) for h in hashes)
    assert [L.assign_split(h, ratios) for h in hashes[:50]] == [L.assign_split(h, ratios) for h in hashes[:50]]
    assert abs(counts["train"] / 20000 - 0.7) < 0.02 and abs(counts["test"] / 20000 - 0.1) < 0.02
    carved = Counter(L.assign_source_split("train", h, 0.1) for h in hashes)
    assert abs(carved["val"] / 20000 - 0.1) < 0.02 and set(carved) == {"train", "val"}
    assert {L.assign_source_split("test", h, 0.1) for h in hashes[:100]} == {"test"}


def test_label_names_never_renumber():
    assert L.merge_label_names([], ["10", "2", "cat"]) == ["2", "10", "cat"]
    assert L.merge_label_names(["b", "a"], ["a", "c", "b"]) == ["b", "a", "c"]
