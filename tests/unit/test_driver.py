"""The driver side every trainer shares: one plan, one loop job, one set of dataset tags."""
from visionlake.lake.manifest import SourceRecord
from visionlake.lake.reader import InputSpec, TrainingInputs
from visionlake.lake.shards import RankShard
from visionlake.train.driver import TrainingPlan
from visionlake.train.launcher import RankSettings

from tests.unit.lake_records import a_manifest


def a_plan() -> TrainingPlan:
    shards = tuple(RankShard(("f1.parquet", "f2.parquet"), rank, 2, "row_group", rows) for rank, rows in
                   enumerate((40, 44)))
    inputs = TrainingInputs(train=shards, val=shards[:1], test_files=("t.parquet",), train_files=("f1.parquet",),
                            steps=5)
    manifest = a_manifest(version=7, run_id="ingest-7", source=SourceRecord("file:/raw", None, 84, "00ff"),
                          table_versions={"images": 7, "quarantine": 3})
    return TrainingPlan(manifest, InputSpec(manifest.image.shape, batch_size=8), inputs, num_proc=2,
                        rank_settings=RankSettings(seed=3, threads=1), experiment_id="1",
                        tracking_uri="http://127.0.0.1:5000", checkpoint_root="file:/lake/_checkpoints")


def test_every_trainer_tags_its_run_with_the_dataset_version_digest_and_sharding():
    assert a_plan().dataset_tags() == {
        "dataset": "d", "dataset.version": 7, "dataset.digest": "00ff", "dataset.run_id": "ingest-7",
        "horovod.num_proc": 2, "train.engine": "horovod", "lake.images_version": "7", "data.sharding": "row_group",
        "data.rows_per_rank": "40,44",
        "data.steps_per_epoch": "5"}


def test_the_loop_job_checkpoints_under_the_run_and_reads_the_planned_shards():
    plan = a_plan()
    loop = plan.loop("run-9", 12, selection=("val_accuracy", "max"))
    assert loop.checkpoint_uri == "file:/lake/_checkpoints/run-9" and loop.run_id == "run-9"
    assert (loop.epochs, loop.steps_per_epoch, loop.selection) == (12, 5, ("val_accuracy", "max"))
    assert loop.train == plan.inputs.train and loop.val == plan.inputs.val
    assert loop.spec.image_shape == (28, 28, 1) and loop.tracking_uri == "http://127.0.0.1:5000"
