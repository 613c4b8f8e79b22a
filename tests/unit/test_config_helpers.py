"""Config helpers the jobs use around the loaded config: registered names, the layered listing, the log summary,
local masters and absolute locations (loading and validating the config itself: test_config.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from visionlake.config import (GenerativeConfig, absolute_uri, config_summary, is_local_master, load_config,
                               resolve_config)


@pytest.mark.parametrize("model, gan", [("dcgan", True), ("cdcgan", True), ("vae", False), ("autoencoder", False)])
def test_a_generative_model_is_registered_under_the_prefix_and_its_kind(model, gan):
    settings = GenerativeConfig(model=model, registered_prefix="acme")
    assert settings.registered_name() == f"acme-{model}"
    assert settings.is_gan is gan


def test_the_config_listing_is_one_pasteable_override_per_setting_with_its_layer(tmp_path):
    layer = tmp_path / "team.yaml"
    layer.write_text("train:\n  epochs: 7\nspark:\n  conf:\n    spark.ui.enabled: 'true'\n")
    listing = resolve_config([str(layer)], ["ingest.dataset=parts", "ingest.split.ratios={train: 0.5, val: 0.5}"],
                             base_dir=str(tmp_path)).describe().splitlines()
    assert listing[0] == f"# later layers win: built-in < defaults < {layer} < override"
    rows = dict(line.rsplit("  # ", 1) for line in listing[1:])
    rows = {setting.strip(): source for setting, source in rows.items()}
    assert rows["train.epochs=7"] == str(layer)
    assert rows["spark.conf.spark.ui.enabled='true'"] == str(layer)  # spark.conf entries one by one
    assert rows["ingest.dataset=parts"] == "override"
    assert rows["ingest.split.ratios={train: 0.5, val: 0.5}"] == "override"  # a mapping setting as one flow value
    assert rows[f"lake.root={tmp_path / 'lake'}"] == "defaults"
    # Every line is a setting that loads back as it is shown.
    settings = list(rows)
    assert load_config(None, settings, base_dir=str(tmp_path)) == load_config(
        [str(layer)], ["ingest.dataset=parts", "ingest.split.ratios={train: 0.5, val: 0.5}"], base_dir=str(tmp_path))


def test_a_job_logs_its_configuration_in_three_lines(tmp_path):
    config = load_config(None, ["spark.master=local[2]", "ingest.dataset=parts", "ingest.source.uri=/raw",
                                "ingest.image.height=32", "ingest.image.width=48", "ingest.image.mode=RGB",
                                "train.dataset=parts", "train.epochs=3", "train.batch_size=16"],
                         base_dir=str(tmp_path))
    summary = config_summary(config)
    assert summary[0] == f"config: Spark local[2], lake {tmp_path / 'lake'}, MLflow {config.tracking.tracking_uri}"
    assert summary[1] == (f"config: ingest /raw -> dataset 'parts' (48x32 RGB {config.ingest.image.codec}); train "
                          f"{config.train.model} on 'parts', 3 epochs x batch 16/rank, {config.train.reader} reader, "
                          f"{config.train.engine} engine")
    assert summary[2].startswith("config: `visionlake show-config` with the same --conf and overrides")


@pytest.mark.parametrize("master, local", [("local", True), ("local[4]", True), ("local[*,2]", True),
                                           ("localhost", False), ("spark://127.0.0.1:7077", False), ("yarn", False)])
def test_a_local_master_is_one_process_on_one_disk(master, local):
    assert is_local_master(master) is local


def test_local_paths_become_absolute_and_uris_stay_as_they_are(tmp_path):
    assert absolute_uri("lake", tmp_path) == str(tmp_path / "lake")
    assert absolute_uri("./a/../lake", tmp_path) == str(tmp_path / "lake")
    assert absolute_uri("/data/lake", tmp_path) == "/data/lake"
    for uri in ("hdfs://nn:8020/lake", "s3a://bucket/lake", "file:/lake", "file:///lake"):
        assert absolute_uri(uri, Path("/elsewhere")) == uri
