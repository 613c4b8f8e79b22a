"""Distributed classifier training on real Spark, real Horovod (2 ranks) and a real MLflow SQLite store."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from visionlake.operate.demo_data import write_demo_dataset
from visionlake.ingest.job import ingest
from visionlake.train.launcher import RankSettings, TrainingError, init_rank, run_on_ranks
from visionlake.tracking import TrackingError
from visionlake.train.classifier import make_train_step, train_classifier

# Rank functions defined here travel to the Horovod processes by value, not by (test-only) module reference.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TRAIN = ["train.epochs=6", "train.batch_size=16", "train.num_proc=2", "demo.images_per_class=100",
         "train.augment.flip=false", "train.augment.crop_fraction=1.0", "train.augment.brightness=0.0",
         "train.augment.contrast=0.0"]


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory, spark):
    """The demo dataset ingested once for this module; each test gets its own MLflow store via ``workspace``."""
    from visionlake.config import load_config

    root = tmp_path_factory.mktemp("train-lake")
    config = load_config(None, TRAIN, base_dir=str(root))
    write_demo_dataset(root / "data" / "demo-raw", config.demo)
    ingest(spark, config)
    return root


@pytest.fixture
def workspace(demo_lake, tmp_path):
    """Config over the shared lake with a fresh MLflow store and checkpoint folder per test."""
    from visionlake.config import load_config

    def make(*overrides: str):
        return load_config(None, [*TRAIN, f"lake.root={demo_lake / 'lake'}",
                                  f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                                  f"tracking.artifact_root={tmp_path}/artifacts",
                                  f"train.checkpoint_root={tmp_path}/checkpoints", *overrides],
                           base_dir=str(tmp_path))
    return make


def mlflow_client(config):
    from mlflow.tracking import MlflowClient
    return MlflowClient(config.tracking.tracking_uri)


# Every engine x reader pair trained once for the module, on the same data, seeds and schedule, each the first run in
# its own MLflow store; the tests below compare and inspect these runs.
MATRIX = (("horovod", "petastorm"), ("horovod", "tfrecord"), ("horovod", "arrow"), ("tf_distribute", "arrow"))
MATRIX_EPOCHS = 4


@dataclass(frozen=True)
class Trained:
    summary: object  # the TrainingSummary train_classifier returned
    settings: tuple[str, ...]
    store: Path

    def config(self, *overrides: str):
        from visionlake.config import load_config
        return load_config(None, [*self.settings, *overrides], base_dir=str(self.store))


@pytest.fixture(scope="module")
def matrix(spark, demo_lake, tmp_path_factory) -> dict[tuple[str, str], Trained]:
    runs = {}
    for engine, reader in MATRIX:
        store = tmp_path_factory.mktemp(f"train-{engine}-{reader}")
        settings = (*TRAIN, f"lake.root={demo_lake / 'lake'}", f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
                    f"tracking.artifact_root={store}/artifacts", f"train.checkpoint_root={store}/checkpoints",
                    f"train.engine={engine}", f"train.reader={reader}", f"train.epochs={MATRIX_EPOCHS}")
        untrained = Trained(None, settings, store)
        runs[engine, reader] = Trained(train_classifier(spark, untrained.config()), settings, store)
    return runs


def test_two_ranks_learn_register_and_end_identical(spark, matrix):
    trained = matrix["horovod", "petastorm"]
    summary, config, workspace = trained.summary, trained.config(), trained.config

    losses = [epoch["loss"] for epoch in summary.history]
    assert losses[-1] < losses[0]
    assert summary.best_val_accuracy > 0.5 and summary.test_accuracy > 0.5  # 5 classes: chance is 0.2
    assert len(summary.rank_weight_digests) == 2 and len(set(summary.rank_weight_digests)) == 1
    client = mlflow_client(config)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.batch_size"] == "16" and run.data.tags["dataset.version"] == "1"
    assert [m.step for m in client.get_metric_history(summary.run_id, "val_accuracy")] == list(range(len(losses)))
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "evaluation")}
    assert artifacts == {"evaluation/training_curves.png", "evaluation/confusion_matrix.png",
                         "evaluation/per_class_test.json"}
    model = client.get_registered_model("visionlake-classifier")
    assert model.aliases == {"candidate": 1, "champion": 1}

    # The gate: a clearly worse model becomes the candidate but does not take champion.
    worse = train_classifier(spark, workspace("train.epochs=1", "train.learning_rate=0.0000001"))
    assert worse.gate["gate.decision"] == "kept_champion"
    assert client.get_registered_model("visionlake-classifier").aliases == {"candidate": 2, "champion": 1}
    assert client.get_model_version("visionlake-classifier", "2").tags["gate.champion_value"] == \
        f"{summary.best_val_accuracy:.6f}"

    # The registered champion loads by alias and predicts probabilities.
    import mlflow.pyfunc
    champion = mlflow.pyfunc.load_model("models:/visionlake-classifier@champion")
    probabilities = np.asarray(champion.predict(np.zeros((3, 32, 32, 3), np.float32)))
    assert probabilities.shape == (3, 5) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # Its environment pins this one's TensorFlow build (given, not inferred by loading the model once more).
    from mlflow.artifacts import download_artifacts
    from importlib.metadata import version
    pins = Path(download_artifacts("models:/visionlake-classifier@champion/requirements.txt")).read_text().split()
    tensorflow = next(name for name in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu") if _installed(name))
    assert f"{tensorflow}=={version(tensorflow)}" in pins and f"numpy=={np.__version__}" in pins


def _installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return bool(version(name))
    except PackageNotFoundError:
        return False


def test_a_restarted_run_continues_from_its_last_checkpoint(spark, workspace):
    first = train_classifier(spark, workspace("train.epochs=1"))
    resumed = train_classifier(spark, workspace("train.epochs=3", f"train.resume_run_id={first.run_id}"))
    assert resumed.run_id == first.run_id
    steps = [m.step for m in mlflow_client(workspace()).get_metric_history(first.run_id, "loss")]
    assert steps == [0, 1, 2]  # epoch 0 was not trained again


def test_the_tfrecord_and_arrow_readers_train_like_the_petastorm_reader(matrix):
    readers = ("petastorm", "tfrecord", "arrow")
    runs = {reader: matrix["horovod", reader].summary for reader in readers}
    tags = {reader: mlflow_client(matrix["horovod", reader].config()).get_run(summary.run_id).data.tags
            for reader, summary in runs.items()}
    shares = {reader: [int(n) for n in tags[reader]["data.rows_per_rank"].split(",")] for reader in readers}
    steps = {reader: int(tags[reader]["data.steps_per_epoch"]) for reader in readers}
    # Every reader covers the whole train split (TFRecord ranks split it by record, so an odd row can be left over)
    # and takes its smallest share's full batches. Row-group shares are only as equal as the lake's row groups,
    # whose sizes follow the PNG bytes, so their steps may fall below TFRecord's; they need not equal them.
    assert shares["arrow"] == shares["petastorm"], "arrow reads petastorm's row-group plan"
    assert 0 <= sum(shares["petastorm"]) - sum(shares["tfrecord"]) < len(shares["tfrecord"]), shares
    for reader in readers:
        assert steps[reader] == min(shares[reader]) // 16, (reader, steps[reader], shares[reader])
    for summary in runs.values():
        assert summary.history[-1]["loss"] < summary.history[0]["loss"]
        assert len(set(summary.rank_weight_digests)) == 1
    # The same data, seeds and schedule: the readers learn as well as each other (they shuffle differently).
    petastorm = runs["petastorm"].best_val_accuracy
    assert petastorm > 0.6, petastorm
    for reader in ("tfrecord", "arrow"):
        assert abs(runs[reader].best_val_accuracy - petastorm) <= 0.15, (reader, runs[reader].best_val_accuracy)
    # The arrow run read its test split through arrow too (NaN, an unread split, fails the comparison).
    assert abs(runs["arrow"].test_accuracy - runs["petastorm"].test_accuracy) <= 0.15, runs["arrow"].test_accuracy


# Horovod's own Spark-job thread re-raises the cancellation after the failure has reached us; that is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failing_rank_is_reported_and_the_run_marked_failed(spark, workspace, demo_lake):
    config = workspace()
    victim = sorted((demo_lake / "lake" / "demo" / "images" / "split=train").rglob("*.parquet"))[-1]
    checksum = victim.with_name(f".{victim.name}.crc")
    original, original_checksum = victim.read_bytes(), checksum.read_bytes()
    # Garbage in the image column's pages, footer and the label/id columns intact: the driver's planning (which
    # reads those) passes, the rank that reads this file's images fails while decoding.
    import pyarrow.parquet as pq

    chunk = pq.ParquetFile(victim).metadata.row_group(0).column(
        pq.ParquetFile(victim).schema_arrow.get_field_index("image"))
    start = chunk.data_page_offset + 16
    end = chunk.data_page_offset + chunk.total_compressed_size
    damaged = bytearray(original)
    damaged[start:end] = b"\xee" * (end - start)
    victim.write_bytes(bytes(damaged))
    checksum.unlink()
    try:
        with pytest.raises(TrainingError, match=r"distributed training failed on rank \d") as failure:
            train_classifier(spark, config)
    finally:
        victim.write_bytes(original)
        checksum.write_bytes(original_checksum)
    assert "Traceback" in str(failure.value)
    client = mlflow_client(config)
    runs = client.search_runs([client.get_experiment_by_name("visionlake").experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]


def test_an_unusable_tracking_store_fails_before_training(spark, workspace):
    with pytest.raises(TrackingError, match="cannot use the MLflow tracking store"):
        train_classifier(spark, workspace("tracking.tracking_uri=http://127.0.0.1:9"))


def one_step_weights(batch_per_rank: int, seed: int, engine: str):
    """One optimiser step on this rank's slice of a fixed batch of 2 x batch_per_rank images."""
    import tensorflow as tf

    from visionlake.models.classifier import build_classifier

    hvd = init_rank(RankSettings(seed=seed, threads=1, engine=engine))
    tf.keras.utils.set_random_seed(seed + hvd.rank())  # each rank starts from its own weights: the broadcast must fix it
    model = build_classifier("lenet", (12, 12, 1), 3)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Dropout):
            layer.rate = 0.0  # dropout masks would differ between the two layouts
    hvd.broadcast_variables(model.variables, root_rank=0)
    rng = np.random.default_rng(0)
    images = rng.random((2 * batch_per_rank, 12, 12, 1), dtype=np.float32)
    labels = rng.integers(0, 3, 2 * batch_per_rank).astype(np.int32)
    share = len(images) // hvd.size()
    mine = slice(hvd.rank() * share, (hvd.rank() + 1) * share)
    step = make_train_step(model, tf.keras.optimizers.SGD(0.5), hvd)
    step(tf.constant(images[mine]), tf.constant(labels[mine]))
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize("engine", ["horovod", "tf_distribute"])
def test_two_ranks_of_batch_b_step_like_one_rank_of_batch_2b(spark, engine):
    one_rank = run_on_ranks(spark, one_step_weights, (8, 3, engine), num_proc=1, engine=engine)[0]
    two_ranks = run_on_ranks(spark, one_step_weights, (8, 3, engine), num_proc=2, engine=engine)
    for rank_weights in two_ranks:
        for expected, actual in zip(one_rank, rank_weights):
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
    initial_changed = any(not np.allclose(w, 0) for w in one_rank)
    assert initial_changed


def test_the_tf_distribute_engine_trains_like_horovod(matrix):
    """The same data plan, seeds and schedule on both engines (the arrow reader, which both stacks have)."""
    runs = {engine: matrix[engine, "arrow"].summary for engine in ("horovod", "tf_distribute")}
    for engine, summary in runs.items():
        assert summary.history[-1]["loss"] < summary.history[0]["loss"]
        assert len(summary.rank_weight_digests) == 2 and len(set(summary.rank_weight_digests)) == 1
        client = mlflow_client(matrix[engine, "arrow"].config())
        assert client.get_run(summary.run_id).data.tags["train.engine"] == engine
    horovod, tf_distribute = runs["horovod"].test_accuracy, runs["tf_distribute"].test_accuracy
    assert horovod > 0.5, horovod
    assert abs(tf_distribute - horovod) <= 0.1, (tf_distribute, horovod)


def fail_on_rank_one(engine: str) -> int:
    import tensorflow as tf

    ranks = init_rank(RankSettings(seed=1, threads=1, engine=engine))
    if ranks.rank() == 1:
        raise ValueError("rank one cannot go on")
    ranks.allreduce(tf.constant([1.0]), op=ranks.Sum)  # rank 0 waits here for a peer that is gone
    return ranks.rank()


def _rank_processes() -> list[int]:
    """This session's rank processes (descendants of its Spark JVM): another pytest-xdist worker trains beside it."""
    import psutil

    ranks = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "visionlake.train.tf_worker" in " ".join(child.cmdline()):
                ranks.append(child.pid)
    return ranks


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("engine", ["horovod", "tf_distribute"])
def test_a_rank_failure_surfaces_the_same_on_both_engines(spark, engine):
    import time

    with pytest.raises(TrainingError, match="distributed training failed on rank 1") as failure:
        run_on_ranks(spark, fail_on_rank_one, (engine,), num_proc=2, engine=engine)
    assert failure.value.rank == 1
    assert "ValueError: rank one cannot go on" in failure.value.rank_traceback
    deadline = time.monotonic() + 30
    while _rank_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _rank_processes() == [], "the surviving rank must not wait forever for its failed peer"


LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def listening_addresses() -> list[str]:
    """The local addresses (hex, as /proc/net shows them) of the TCP sockets this rank process listens on, once the
    ranks have joined and run a collective."""
    import os

    import tensorflow as tf

    ranks = init_rank(RankSettings(seed=1, threads=1, engine="tf_distribute"))
    ranks.allreduce(tf.constant([1.0]), op=ranks.Sum)
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1].rsplit(":", 1)[0])
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from Linux's /proc")
def test_tf_distribute_ranks_listen_on_loopback_only_in_local_mode(spark):
    """TensorFlow's gRPC server asks for every interface; in local mode the ranks must still listen on 127.0.0.1."""
    per_rank = run_on_ranks(spark, listening_addresses, (), num_proc=2, engine="tf_distribute")
    assert all(per_rank), per_rank  # each rank's collective server was found
    assert {address for addresses in per_rank for address in addresses} <= LOOPBACK_HEX, per_rank
