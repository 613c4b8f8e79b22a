"""`visionlake demo` as a person runs it (the CLI, a short schedule): the console holds visionlake's own lines only,
and what Spark, MLflow, TensorFlow and Horovod say is in the log file the summary names; on a terminal, a phase
shows a bar of its Spark tasks."""
from __future__ import annotations

import logging
import re

from tests.integration.conftest import CLI_DEMO_GROUP
from visionlake import progress
from visionlake.progress import phase, spark_task_counts

# Lines of visionlake's own: a timestamped log line, an indented summary line, or a line of the demo's report.
OWN_LINE = re.compile(r"^(\d\d:\d\d:\d\d |  |visionlake demo finished |lake |registered models |anomaly rate |models:|"
                      r"report: |next:)")
# What other libraries put on a console when nothing keeps them off it.
NOISE = re.compile(r"Traceback|Warning|WARN|<stdout>|<stderr>|\x1b\[|Unischema|Recovering rowgroup|"
                   r"No training configuration|Successfully registered|Setting default log level|={10}|py4j", re.I)


pytestmark = CLI_DEMO_GROUP


def test_the_demo_console_is_visionlake_s_own_lines_and_the_rest_is_in_the_log_file(cli_demo):
    console = cli_demo.console

    foreign = [line for line in console if not OWN_LINE.match(line) or NOISE.search(line)]
    assert not foreign, "lines that are not visionlake's on the console:\n" + "\n".join(foreign[:30])
    for expected in ("demo step 2/6: ingest", "rank 0: epoch 1/1:", "demo step 6/6: scoring"):
        assert any(expected in line for line in console), expected
    assert sum("rank 0: epoch 1/1:" in line for line in console) == 3, "each model's epoch line, relayed once"
    assert not [line for line in console if "rank 0: steps " in line], "step reports drive a bar on a terminal only"
    log_file = cli_demo.root / "visionlake.log"
    assert console[-1].endswith(f"other libraries' output (Spark, MLflow, TensorFlow, Horovod ranks): {log_file}")
    logged = log_file.read_text()
    for noise in ("Setting default log level", "horovod.ranks", "mlflow", "Successfully registered model"):
        assert noise in logged, f"{noise!r} belongs in the log file"


def test_a_phase_counts_the_tasks_of_its_spark_jobs_and_logs_its_time(spark, capsys, monkeypatch, caplog):
    monkeypatch.setattr(progress, "bars_enabled", lambda: True)
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.05)
    slow = spark.sparkContext.parallelize(range(8), 8).map(lambda x: __import__("time").sleep(0.3) or x)
    with caplog.at_level(logging.INFO, logger="visionlake.progress"):
        with phase("decoding", spark):
            assert slow.sum() == 28
    assert "tasks" in capsys.readouterr().err
    assert any(record.getMessage().startswith("decoding: ") for record in caplog.records)
    seen: dict[int, tuple[int, int]] = {}
    assert spark_task_counts(spark, seen) == (0, 0), "no stage is active after the phase"
