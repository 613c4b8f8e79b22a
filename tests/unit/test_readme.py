"""Every command in the README's shell blocks would run as written (tests/readme_commands.py says how each kind is
checked; nothing here starts Spark, and the cluster harness runs the `cluster` commands for real)."""
from __future__ import annotations

import pytest

from tests.readme_commands import (KINDS, CommandError, ShellCommand, check_command, extract_commands, parse_command,
                                   readme_commands)

COMMANDS = readme_commands()


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[str(command) for command in COMMANDS])
def test_readme_command_runs_as_written(index, tmp_path):
    check_command(COMMANDS[index], tmp_path, earlier=tuple(COMMANDS[:index]))


def test_the_readme_has_commands_of_every_kind_but_unknown():
    kinds = {command.kind for command in COMMANDS}
    assert "unknown" not in kinds
    assert {"make", "visionlake", "job", "remote"} <= kinds


def test_blocks_are_split_into_commands_as_the_shell_reads_them():
    markdown = "\n".join([
        "```bash",
        "# a comment line",
        "make demo   # trailing comment",
        "SPARK_LOCAL_IP=127.0.0.1 spark-submit --master local[2] \\",
        "    --archives dist/visionlake-env.tar.gz#environment jobs/ingest.py lake.root='/a b'",
        "python3.11 -m venv /tmp/vl && /tmp/vl/bin/pip install -c constraints.txt x; export A=1",
        "```",
        "```",
        "not a shell block",
        "```",
        "```console",
        "$ visionlake --help",
        "usage: visionlake ...",
        "```"])
    commands = extract_commands(markdown)

    assert [(command.line, command.kind) for command in commands] == [
        (3, "make"), (4, "job"), (6, "setup"), (6, "setup"), (6, "env"), (12, "visionlake")]
    submit = commands[1]
    assert submit.env == (("SPARK_LOCAL_IP", "127.0.0.1"),)
    assert submit.argv[-3:] == ("dist/visionlake-env.tar.gz#environment", "jobs/ingest.py", "lake.root=/a b")


@pytest.mark.parametrize("text, kind", [
    ("spark-submit --master spark://127.0.0.1:<port> jobs/ingest.py", "cluster"),
    ("spark-submit --master spark://master:7077 jobs/ingest.py", "remote"),
    ("spark-submit --master yarn --deploy-mode cluster jobs/ingest.py", "remote"),
    ("spark-submit --master k8s://https://kube:6443 local:///opt/visionlake/jobs/ingest.py", "remote"),
    ("spark-submit jobs/ingest.py", "job"),
    ("python jobs/ingest.py --help", "job"),
    ("python bench/train_bench.py", "unknown"),
    ("rm -rf lake", "unknown"),
    ("cp conf/cluster.example.yaml conf/cluster.yaml", "copy"),
])
def test_commands_are_classified_by_what_they_run(text, kind):
    assert parse_command(text).kind == kind


JARS = "--jars 'dist/jars/*.jar'"


def _check(text: str, tmp_path, *earlier: str) -> None:
    check_command(parse_command(text, "README.md:1"), tmp_path, tuple(parse_command(line) for line in earlier))


def test_a_flag_the_job_does_not_take_fails(tmp_path):
    with pytest.raises(CommandError, match="jobs/train_classifier.py rejects its arguments"):
        _check(f"spark-submit {JARS} jobs/train_classifier.py --datasets parts", tmp_path)


def test_an_unknown_config_key_fails_through_the_real_loader(tmp_path):
    with pytest.raises(CommandError, match="unknown config key train.epoch"):
        _check("visionlake train classifier --dataset demo train.epoch=3", tmp_path)


def test_shipped_files_must_be_what_the_makefile_builds(tmp_path):
    with pytest.raises(CommandError, match="not something the Makefile builds"):
        _check(f"spark-submit {JARS} --py-files dist/visionlake-9.9.9-py3-none-any.whl jobs/ingest.py", tmp_path)


def test_a_conf_file_must_exist_or_be_copied_by_an_earlier_command(tmp_path):
    with pytest.raises(CommandError, match="--conf conf/cluster.yaml: no such file"):
        _check(f"spark-submit {JARS} jobs/ingest.py --conf conf/cluster.yaml", tmp_path)
    _check(f"spark-submit {JARS} jobs/ingest.py --conf conf/cluster.yaml", tmp_path,
           "cp conf/cluster.example.yaml conf/cluster.yaml")


def test_a_cluster_submit_whose_executors_cannot_reach_the_store_fails(tmp_path):
    with pytest.raises(CommandError, match="would refuse to start under --master spark://master:7077"):
        _check(f"spark-submit {JARS} --master spark://master:7077 jobs/ingest.py", tmp_path)  # sqlite tracking store


def test_a_submit_without_delta_lakes_jars_fails(tmp_path):
    with pytest.raises(CommandError, match="spark-submit needs Delta Lake's jars"):
        _check("spark-submit jobs/ingest.py", tmp_path)
    _check(f"spark-submit {JARS} jobs/ingest.py", tmp_path)


def test_unknown_commands_fail_until_classified(tmp_path):
    with pytest.raises(CommandError, match="classify it in tests/readme_commands.py"):
        _check("curl http://example.com", tmp_path)


def test_a_missing_make_target_fails(tmp_path):
    with pytest.raises(CommandError, match="no-such-target"):
        _check("make no-such-target", tmp_path)


def test_cluster_commands_resolve_their_placeholders_for_the_harness():
    command = parse_command("spark-submit --master spark://127.0.0.1:<port> jobs/ingest.py "
                            "lake.root=<shared>/lake tracking.tracking_uri=http://127.0.0.1:<mlflow port>")
    assert command.placeholders == {"port", "shared", "mlflow_port"}
    assert command.resolve(port="7077", shared="/var/tmp/x", mlflow_port="5000")[-3:] == [
        "jobs/ingest.py", "lake.root=/var/tmp/x/lake", "tracking.tracking_uri=http://127.0.0.1:5000"]
    with pytest.raises(KeyError, match="shared"):
        command.resolve(port="1", mlflow_port="2")
    assert all(isinstance(command, ShellCommand) for command in readme_commands("cluster"))
    with pytest.raises(ValueError, match="no command kind"):
        readme_commands("clusters")


def test_every_kind_is_described():
    assert all(KINDS.values())
