"""Jobs as users submit them: the real spark-submit script, the package shipped as a wheel with --py-files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, loopback_job_env

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def spark_submit(job: str, wheel: Path, cwd: Path, *overrides: str, jars: bool = True) -> subprocess.CompletedProcess:
    from visionlake.spark import jars_folder

    command = [str(SPARK_SUBMIT), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
               *(["--jars", str(jars_folder() / "*.jar")] if jars else []),  # Spark expands the glob, as in README
               "--py-files", str(wheel), str(REPO / "jobs" / f"{job}.py"), *overrides]
    return subprocess.run(command, cwd=cwd, env=loopback_job_env(), capture_output=True, text=True, timeout=600)


def test_ingest_job_runs_through_spark_submit_with_the_wheel(visionlake_wheel, tmp_path, spark):
    from visionlake.config import load_config
    from visionlake.operate.demo_data import bad_files, write_demo_dataset
    from visionlake.lake.store import Lake

    config = load_config(None, ["demo.images_per_class=20"], base_dir=str(tmp_path))
    files = write_demo_dataset(tmp_path / "data" / "demo-raw", config.demo)

    # Relative paths in the embedded config resolve against the submit's working directory.
    result = spark_submit("ingest", visionlake_wheel, tmp_path, "demo.images_per_class=20")

    assert result.returncode == 0, result.stderr[-3000:]
    # spark-submit merges the Python driver's stderr (our log) into its stdout.
    assert f"from {visionlake_wheel}" in result.stdout, "the job must import visionlake from the shipped wheel"
    lake = Lake(spark, str(tmp_path / "lake"))
    manifest = lake.read_manifest("demo")
    assert manifest.version == 1 and sum(manifest.split_totals().values()) == files - len(bad_files())
    assert lake.read_table("demo", "images").count() == files - len(bad_files())
    assert lake.read_table("demo", "quarantine").count() == len(bad_files())


def test_a_missing_source_exits_2_with_what_to_fix(visionlake_wheel, tmp_path):
    result = spark_submit("ingest", visionlake_wheel, tmp_path, f"ingest.source.uri={tmp_path / 'nowhere'}")

    assert result.returncode == 2, result.stdout[-3000:]
    assert "does not exist; set ingest.source.uri" in result.stdout
    assert not (tmp_path / "lake" / "demo" / "images").exists()


def test_a_submit_without_delta_lakes_jars_exits_2_saying_how_to_add_them(visionlake_wheel, tmp_path):
    result = spark_submit("ingest", visionlake_wheel, tmp_path, jars=False)

    assert result.returncode == 2, result.stdout[-3000:]
    assert "Delta Lake's jars are not on this application's classpath: add --jars" in result.stdout
    assert not (tmp_path / "lake").exists()
