import dataclasses
import functools
import pickle
import re

import pytest
from pydantic import ValidationError

from visionlake.config import ConfigError, load_config, resolve_config


def test_embedded_default_is_local_and_resolves_paths_against_the_base(tmp_path):
    config = load_config(base_dir=str(tmp_path))
    assert config.spark.master == "local[*]"
    assert config.lake.root == str(tmp_path / "lake")
    assert config.tracking.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert config.ingest.source.uri == str(tmp_path / "data" / "demo-raw")


def test_the_repository_config_is_the_embedded_default_itself():
    from pathlib import Path

    repository_copy = Path(__file__).resolve().parents[2] / "conf" / "local.yaml"
    embedded = Path(__file__).resolve().parents[2] / "lib" / "visionlake" / "conf" / "local.yaml"
    # One file: an editor that writes through the link into a copy would let the two drift apart.
    assert repository_copy.is_symlink() and repository_copy.resolve() == embedded


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
    ("lake.commit_lock=s3a://bucket/locks", r"lake\.commit_lock=s3a://bucket/locks must be a local or NFS folder"),
    ("lake.commit_lock=hdfs://nn:8020/locks", r"lake\.commit_lock=hdfs://nn:8020/locks must be a local or NFS"),
    ("train.dataset_version=-1", r"train\.dataset_version must be >= 0"),
    ("generative.gan.average_decay=1", r"generative\.gan\.average_decay must be in \[0, 1\)"),
    ("demo.gan_epochs=0", r"demo\.gan_epochs must be >= 1, got 0"),
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


def test_the_mnist_config_keeps_the_gan_its_figures_were_measured_with_when_the_demo_s_tuning_moves(tmp_path):
    from pathlib import Path
    mnist = Path(__file__).resolve().parents[2] / "conf" / "mnist.yaml"
    gan = load_config(str(mnist), base_dir=str(tmp_path)).generative.gan
    assert (gan.learning_rate, gan.discriminator_learning_rate, gan.r1_gamma, gan.filters) == (0.0002, None, 0.0, 64)
    assert load_config(None, base_dir=str(tmp_path)).generative.gan.discriminator_learning_rate == 0.001


def test_retention_defaults_to_a_week_and_a_local_commit_lock_resolves_against_the_base(tmp_path):
    config = load_config(None, ["lake.commit_lock=locks"], base_dir=str(tmp_path))
    assert config.lake.retention_hours == 168.0 and config.lake.commit_lock == str(tmp_path / "locks")
    assert load_config(None, ["lake.retention_hours=0", "lake.commit_lock=file:/nfs/locks"]).lake.commit_lock \
        == "file:/nfs/locks"


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


def _write(folder, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def test_a_file_layers_over_the_embedded_defaults_instead_of_replacing_them(tmp_path):
    defaults = load_config(None, base_dir=str(tmp_path))
    user = _write(tmp_path, "user.yaml", "lake: {root: /data/lake}\ningest: {dataset: parts}\ntrain: {epochs: 3}\n")
    config = load_config(user, base_dir=str(tmp_path))
    assert (config.lake.root, config.ingest.dataset, config.train.epochs) == ("/data/lake", "parts", 3)
    # What the file does not set stays as the defaults have it, down to single Spark properties.
    assert config.spark.conf["spark.driver.memory"] == defaults.spark.conf["spark.driver.memory"] == "4g"
    assert config.train.batch_size == defaults.train.batch_size and config.ingest.image == defaults.ingest.image


def test_files_layer_in_order_then_overrides_and_show_config_names_each_value_s_layer(tmp_path, capsys):
    from visionlake.operate.cli import main

    first = _write(tmp_path, "first.yaml", "spark: {conf: {spark.driver.memory: 8g, spark.ui.enabled: 'false'}}\n"
                                           "ingest: {dataset: first, split: {ratios: {train: 0.5, val: 0.5}}}\n"
                                           "train: {epochs: 2, batch_size: 64}\n")
    second = _write(tmp_path, "second.yaml", "spark: {conf: {spark.driver.memory: 2g}}\ningest: {dataset: second}\n"
                                             "train: {epochs: 4}\n")
    resolved = resolve_config([first, second], ["train.epochs=9"], base_dir=str(tmp_path))
    config = resolved.config
    assert (config.ingest.dataset, config.train.epochs, config.train.batch_size) == ("second", 9, 64)
    # spark.conf merges property by property; split ratios are one setting, replaced whole (they must sum to 1).
    assert config.spark.conf["spark.driver.memory"] == "2g" and config.spark.conf["spark.ui.enabled"] == "false"
    assert config.spark.conf["spark.sql.shuffle.partitions"] == "8"
    assert config.ingest.split.ratios == {"train": 0.5, "val": 0.5}
    assert {key: resolved.source_of(key) for key in (
        "ingest.dataset", "train.epochs", "train.batch_size", "spark.conf.spark.driver.memory",
        "spark.conf.spark.ui.enabled", "spark.master", "ingest.split.ratios", "ingest.image.quality",
        "train.checkpoint_root")} == {
        "ingest.dataset": second, "train.epochs": "override", "train.batch_size": first,
        "spark.conf.spark.driver.memory": second, "spark.conf.spark.ui.enabled": first, "spark.master": "defaults",
        "ingest.split.ratios": first, "ingest.image.quality": "built-in",
        "train.checkpoint_root": "derived from lake.root"}

    assert main(["show-config", "--conf", first, "--conf", second, "train.epochs=9"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"# later layers win: built-in < defaults < {first} < {second} < override"
    rows = {line.split("#")[0].strip(): line.rsplit("# ", 1)[1] for line in shown[1:]}
    assert rows["ingest.dataset=second"] == second and rows["train.epochs=9"] == "override"
    assert rows["spark.conf.spark.ui.enabled='false'"] == first and rows["train.batch_size=64"] == first
    assert rows["ingest.split.ratios={train: 0.5, val: 0.5}"] == first
    assert len(rows) == len(shown) - 1 > 60, "every setting is shown, one per line"


def test_an_override_of_one_mapping_entry_changes_only_that_entry(tmp_path):
    config = load_config(None, ["ingest.split.ratios.val=0.05", "ingest.split.ratios.test=0.25"],
                         base_dir=str(tmp_path))
    assert config.ingest.split.ratios == {"train": 0.7, "val": 0.05, "test": 0.25}
    whole = load_config(None, ["ingest.split.ratios={train: 0.9, test: 0.1}"], base_dir=str(tmp_path))
    assert whole.ingest.split.ratios == {"train": 0.9, "test": 0.1}


def test_a_layer_s_unknown_key_or_wrong_type_is_rejected_naming_the_key_and_the_file(tmp_path):
    good = _write(tmp_path, "good.yaml", "train: {epochs: 3}\n")
    typo = _write(tmp_path, "typo.yaml", "train: {epohcs: 3}\n")
    with pytest.raises(ConfigError, match=rf"unknown config key train\.epohcs in {typo}; known keys under train: "):
        load_config([good, typo], base_dir=str(tmp_path))
    wrong = _write(tmp_path, "wrong.yaml", "train: {epochs: many}\n")
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer, got 'many'"):
        load_config([good, wrong], base_dir=str(tmp_path))
    section = _write(tmp_path, "section.yaml", "train: 3\n")
    with pytest.raises(ConfigError, match=rf"train in {section} must be a mapping \(a section of settings\), got 3"):
        load_config(section, base_dir=str(tmp_path))


@pytest.mark.parametrize("override, message", [
    ("ingest.image.height=3.0", r"ingest\.image\.height must be an integer, got 3\.0$"),
    ("ingest.image.height=true", r"ingest\.image\.height must be an integer, got True$"),
    ("ingest.tfrecord=1", r"ingest\.tfrecord must be true or false, got 1$"),
    ("lake.retention_hours=true", r"lake\.retention_hours must be a number, got True$"),
    ("ingest.dataset=null", r"ingest\.dataset must be a string, got None$"),
    ("ingest.label.names=a", r"ingest\.label\.names must be a list, got 'a'$"),
    ("ingest.label.names=[[a]]", r"ingest\.label\.names\[0\] must be a string, got \['a'\]$"),
    ("spark.conf={ui: {enabled: false}}", r"spark\.conf\.ui must be a string, got \{'enabled': False\}$"),
    ("ingest.split.ratios={train: 0.5, holdout: 0.5}", r"ingest\.split\.ratios: only train/val/test are allowed"),
    ("ingest.label.source=manifest", r"ingest\.label\.source=manifest needs ingest\.source\.manifest"),
    ("ingest.dataset=my photos", r"ingest\.dataset 'my photos': use letters, digits"),
])
def test_yaml_types_are_taken_strictly_and_every_rule_names_its_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=rf"^{message}") as raised:
        load_config(None, [override], base_dir=str(tmp_path))
    assert "\n" not in str(raised.value), "one line, not pydantic's report"


def test_yaml_scalars_are_text_where_text_belongs_and_integers_are_numbers(tmp_path):
    config = load_config(None, ["spark.conf.spark.executor.cores=2", "ingest.label.names=[a, 1, true]",
                                "ingest.dataset=2024", "lake.retention_hours=12"], base_dir=str(tmp_path))
    assert config.spark.conf["spark.executor.cores"] == "2" and config.ingest.label.names == ["a", "1", "true"]
    assert config.ingest.dataset == "2024"
    assert config.lake.retention_hours == 12.0 and isinstance(config.lake.retention_hours, float)


@pytest.mark.parametrize("key, outside, edge, expected", [
    ("ingest.image.height", 4097, 4096, r"in 1\.\.4096"),
    ("ingest.image.width", 0, 1, r"in 1\.\.4096"),
    ("ingest.image.alpha_background", -1, 0, r"a grey level in 0\.\.255"),
    ("ingest.image.png_compress_level", 10, 9, r"in 0\.\.9"),
    ("ingest.image.quality", 101, 100, r"a JPEG quality in 1\.\.100 \(95 is near-lossless\)"),
    ("ingest.limits.max_file_bytes", 0, 1, ">= 1"),
    ("ingest.split.val_from_train", 1, 0, r"in \[0, 1\)"),
    ("train.epochs", 0, 1, ">= 1"),
    ("train.learning_rate", 0, 0.0001, "> 0"),
    ("train.augment.crop_fraction", 0, 1, r"in \(0, 1\]"),
    ("train.synthetic_fraction", 1, 0.5, r"in \[0, 1\) \(the share of each batch that is synthetic\)"),
    ("generative.gan.real_label", 1.01, 1, r"in \(0, 1\]"),
    ("generative.gan.class_loss_weight", -0.1, 0, r">= 0 \(0 turns the auxiliary class loss off\)"),
    ("generative.gan.discriminator_steps", 0, 1, ">= 1"),
    ("generative.gan.r1_gamma", -1, 0, r">= 0 \(0 turns the R1 penalty off\)"),
    ("generative.gan.beta2", 1, 0.99, r"in \(0, 1\) \(Adam's beta_2, e\.g\. 0\.999\)"),
    ("generative.gan.discriminator_learning_rate", 0, 0.0001, r"> 0 \(unset = learning_rate\)"),
    ("generative.autoencoder.latent_dim", 0, 1, ">= 1"),
    ("generative.quality.every_epochs", 0, 1, ">= 1"),
    ("synthetic.batch_size", 0, 1, ">= 1"),
    ("anomaly.false_positive_rate", 1, 0, r"in \[0, 1\)"),
    ("score.top_k", 0, 1, ">= 1"),
    ("lake.retention_hours", -0.5, 0, ">= 0"),
])
def test_each_range_rejects_a_value_just_outside_and_takes_its_edge(tmp_path, key, outside, edge, expected):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be {expected}.*, got {re.escape(repr(outside))}$"):
        load_config(None, [f"{key}={outside}"], base_dir=str(tmp_path))
    config = load_config(None, [f"{key}={edge}"], base_dir=str(tmp_path))
    assert functools.reduce(getattr, key.split("."), config) == edge


def test_sections_stay_frozen_picklable_dataclasses_and_replace_checks_what_it_changes(tmp_path):
    config = load_config(base_dir=str(tmp_path))
    assert pickle.loads(pickle.dumps(config)) == config and dataclasses.asdict(config) == config.to_dict()
    assert dataclasses.replace(config.train, epochs=2).epochs == 2  # as the demo and the detectors derive configs
    with pytest.raises(ValidationError, match="epochs"):
        dataclasses.replace(config.train, epochs=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 2  # type: ignore[misc]
