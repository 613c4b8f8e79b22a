"""The current stack (`make test-current`: Python 3.12, Keras 3, numpy 2, current pyarrow; no Horovod, no petastorm):
the whole demo pipeline on train.engine=tf_distribute and train.reader=arrow, and the engine's one-step equivalence.

Each runs on the current stack only: on the pinned one the CLI demo (tests/integration/conftest.py) and
tests/integration/test_train.py (both engines, every reader, the one-step equivalence) prove the same things.
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from tests.conftest import REPO, TINY_TRAINING
from tests.integration.test_train import LOOPBACK_HEX, fail_on_rank_one, listening_addresses, one_step_weights
from visionlake.train.launcher import TrainingError, run_on_ranks

CURRENT = sys.version_info >= (3, 12)
pytestmark = pytest.mark.skipif(not CURRENT, reason="checks the current stack (make test-current); on the pinned "
                                "stack the CLI demo and test_train.py (both engines, every reader) prove the same")


def test_the_current_stack_is_what_its_lock_says():
    import keras
    import pyarrow

    assert int(np.__version__.split(".")[0]) >= 2 and int(keras.__version__.split(".")[0]) >= 3
    assert int(pyarrow.__version__.split(".")[0]) >= 15
    assert importlib.util.find_spec("horovod") is None and importlib.util.find_spec("petastorm") is None


def test_the_demo_runs_end_to_end_on_tf_distribute_and_arrow(spark, tmp_path):
    from mlflow.tracking import MlflowClient

    from visionlake.config import load_config
    from visionlake.operate.pipeline import run_demo

    config = load_config([str(REPO / "conf" / "current.yaml")],
                         [*TINY_TRAINING, "demo.anomaly_epochs=2", "demo.gan_epochs=2", "demo.quality_samples=200"],
                         base_dir=str(tmp_path))
    assert (config.train.engine, config.train.reader) == ("tf_distribute", "arrow")
    summary = run_demo(spark, config)
    images = 5 * config.demo.images_per_class
    assert summary.tables == {"images": images, "quarantine": 4, "predictions": images, "synthetic": 0}
    client = MlflowClient(config.tracking.tracking_uri)
    for name in ("visionlake-classifier", "visionlake-anomaly", "visionlake-cdcgan"):
        assert summary.models[name] == {"candidate": "1", "champion": "1"}
        run_id = client.get_model_version(name, "1").run_id
        assert client.get_run(run_id).data.tags["train.engine"] == "tf_distribute", name
    accuracy = float(summary.figures["classifier test accuracy"].split()[0])
    assert accuracy > 0.5, summary.figures  # 5 classes: chance is 0.2


def test_two_workers_of_batch_b_step_like_one_worker_of_batch_2b(spark):
    one = run_on_ranks(spark, one_step_weights, (8, 3, "tf_distribute"), num_proc=1, engine="tf_distribute")[0]
    two = run_on_ranks(spark, one_step_weights, (8, 3, "tf_distribute"), num_proc=2, engine="tf_distribute")
    for worker_weights in two:
        for expected, actual in zip(one, worker_weights):
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)


def test_a_failing_worker_is_reported_with_its_traceback(spark):
    with pytest.raises(TrainingError, match="distributed training failed on rank 1") as failure:
        run_on_ranks(spark, fail_on_rank_one, ("tf_distribute",), num_proc=2, engine="tf_distribute")
    assert "ValueError: rank one cannot go on" in failure.value.rank_traceback


def test_workers_listen_on_loopback_only(spark):
    per_rank = run_on_ranks(spark, listening_addresses, (), num_proc=2, engine="tf_distribute")
    assert all(per_rank) and {a for addresses in per_rank for a in addresses} <= LOOPBACK_HEX, per_rank
