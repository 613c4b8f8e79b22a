import pytest

from visionlake.config import ConfigError, load_config


def test_embedded_default_is_local_and_resolves_paths_against_the_base(tmp_path):
    config = load_config(base_dir=str(tmp_path))
    assert config.spark.master == "local[*]"
    assert config.lake.root == str(tmp_path / "lake")
    assert config.tracking.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert config.ingest.source.uri == str(tmp_path / "data" / "demo-raw")


def test_overrides_are_typed_and_nested(tmp_path):
    config = load_config(None, ["ingest.image.height=64", "ingest.label.names=[a, b]",
                                "spark.conf.spark.ui.enabled=false", "lake.root=hdfs://nn:8020/lake"],
                         base_dir=str(tmp_path))
    assert config.ingest.image.height == 64
    assert config.ingest.label.names == ["a", "b"]
    assert config.spark.conf["spark.ui.enabled"] == "false"
    assert config.lake.root == "hdfs://nn:8020/lake"  # URIs with a scheme are left alone


@pytest.mark.parametrize("override, message", [
    ("ingest.imgae.height=3", r"unknown config key ingest\.imgae"),
    ("ingest.image.height=tall", r"ingest\.image\.height must be an integer"),
    ("ingest.image.mode=CMYK", r"ingest\.image\.mode must be one of L, RGB"),
    ("ingest.full_rebuild=maybe", r"ingest\.full_rebuild must be true or false"),
    ("ingest.split.ratios={train: 0.5, test: 0.2}", r"sum to 1"),
    ("ingest.label.source=regex", r"named group"),
    ("ingest.image.pad_value=300", r"pad_value must be a grey level"),
    ("ingest.image.codec=webp", r"ingest\.image\.codec must be one of png, jpeg"),
    ("ingest.image.quality=0", r"ingest\.image\.quality must be a JPEG quality in 1\.\.100"),
    ("ingest.label.source=parent", r"ingest\.label\.source must be one of folder, parent_folder"),
    ("lake.parquet_compression=gzip", r"lake\.parquet_compression must be one of zstd, snappy, none"),
    ("lake.retention_hours=-1", r"lake\.retention_hours must be >= 0"),
    ("lake.retention_hours=week", r"lake\.retention_hours must be a number"),
    ("lake.commit_lock=s3a://bucket/locks", r"lake\.commit_lock=s3a://bucket/locks must be on a file system with "
                                            r"exclusive create"),
    ("nonsense", r"must look like key\.path=value"),
])
def test_bad_settings_are_rejected_with_the_key_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override], base_dir=str(tmp_path))


def test_missing_and_malformed_files_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*--conf"):
        load_config(str(tmp_path / "absent.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("ingest: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(broken))


def test_repository_configs_load(tmp_path):
    from pathlib import Path
    conf = Path(__file__).resolve().parents[2] / "conf"
    for path in conf.glob("*.yaml"):
        assert load_config(str(path), base_dir=str(tmp_path)).ingest.dataset


def test_retention_defaults_to_a_week_and_a_local_commit_lock_resolves_against_the_base(tmp_path):
    config = load_config(None, ["lake.commit_lock=locks"], base_dir=str(tmp_path))
    assert config.lake.retention_hours == 168.0 and config.lake.commit_lock == str(tmp_path / "locks")
    assert load_config(None, ["lake.retention_hours=0", "lake.commit_lock=hdfs://nn:8020/locks"]).lake.commit_lock \
        == "hdfs://nn:8020/locks"


def test_checkpoints_default_to_the_shared_lake(tmp_path):
    config = load_config(None, ["lake.root=hdfs://nn:8020/lake"], base_dir=str(tmp_path))
    assert config.train.checkpoint_root == "hdfs://nn:8020/lake/_checkpoints"
    assert load_config(base_dir=str(tmp_path)).train.checkpoint_root == str(tmp_path / "lake" / "_checkpoints")


@pytest.mark.parametrize("overrides, message", [
    (["train.checkpoint_root=/scratch/ckpt"], r"train\.checkpoint_root=/scratch/ckpt is a path on one node's disk"),
    (["lake.root=hdfs://nn/lake", "train.checkpoint_root=/scratch"], r"train\.checkpoint_root=/scratch is a local"),
    (["tracking.tracking_uri=sqlite:///mlflow.db"], r"tracking\.tracking_uri=sqlite:///.* executors"),
    (["tracking.artifact_root=mlartifacts"], r"tracking\.artifact_root=.* is a local folder"),
])
def test_node_local_places_are_config_errors_under_a_cluster_master(tmp_path, overrides, message):
    from visionlake.config import check_reachable_from_executors

    server = ["tracking.tracking_uri=http://127.0.0.1:5000", "tracking.artifact_root="]
    config = load_config(None, server + overrides, base_dir=str(tmp_path))
    check_reachable_from_executors(config, "local[2]")  # one machine, one disk: anything goes
    with pytest.raises(ConfigError, match=message):
        check_reachable_from_executors(config, "spark://127.0.0.1:7077")


def test_a_cluster_config_on_the_shared_lake_and_a_server_passes(tmp_path):
    from visionlake.config import check_reachable_from_executors

    config = load_config(None, ["tracking.tracking_uri=http://127.0.0.1:5000", "tracking.artifact_root=",
                                f"train.checkpoint_root={tmp_path}/lake/_runs"], base_dir=str(tmp_path))
    check_reachable_from_executors(config, "spark://127.0.0.1:7077")
    check_reachable_from_executors(load_config(None, ["tracking.tracking_uri=http://mlflow:5000",
                                                      "tracking.artifact_root=", "lake.root=s3a://bucket/lake"],
                                               base_dir=str(tmp_path)), "yarn")
