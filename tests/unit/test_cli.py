import logging
import subprocess
import sys

import pytest

from tests.conftest import REPO
from visionlake.operate.cli import EXIT_BAD_INPUT, main
from visionlake.config import load_config


def test_bad_config_exits_2_naming_the_key_before_any_spark_work(caplog, own_logging):
    assert main(["ingest", "ingest.imgae.height=3"]) == EXIT_BAD_INPUT
    assert "unknown config key ingest.imgae" in caplog.text


def test_help_shows_a_real_example():
    result = subprocess.run([sys.executable, "-m", "visionlake.operate.cli", "ingest", "--help"], capture_output=True,
                            text=True, check=True)
    assert "visionlake ingest --conf conf/mnist.yaml" in result.stdout


@pytest.fixture
def own_logging():
    """``main`` configures logging for the command it runs; the root logger is put back afterwards, so no handler
    bound to this test's captured stream outlives it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def test_show_config_prints_the_resolved_config(capsys, tmp_path, monkeypatch, own_logging):
    monkeypatch.chdir(tmp_path)
    assert main(["show-config", "ingest.dataset=parts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# later layers win: built-in < defaults < override"
    shown = {line.split()[0]: line.rsplit("# ", 1)[1] for line in lines[1:]}
    assert shown["ingest.dataset=parts"] == "override"
    assert shown[f"lake.root={tmp_path / 'lake'}"] == "defaults"  # the embedded local.yaml, resolved against the cwd
    assert shown[f"train.checkpoint_root={tmp_path / 'lake' / '_checkpoints'}"] == "derived from lake.root"


def test_flags_become_config_overrides_and_explicit_overrides_win():
    from visionlake.operate.cli import parse_arguments

    gan = parse_arguments(["train", "gan", "--dataset", "mnist", "--model", "dcgan", "train.dataset=parts"])
    assert gan.command == "train gan"
    assert gan.overrides == ["train.dataset=mnist", "generative.model=dcgan", "train.dataset=parts"]
    assert load_config(gan.conf, gan.overrides).train.dataset == "parts"
    assert parse_arguments(["train", "vae"]).overrides == ["generative.model=vae"]
    assert parse_arguments(["train", "autoencoder"]).overrides == ["generative.model=autoencoder"]
    generate = parse_arguments(["generate", "--dataset", "demo", "--model", "visionlake-cdcgan@champion",
                                "--per-class", "50"])
    assert generate.overrides == ["train.dataset=demo", "synthetic.model=visionlake-cdcgan@champion",
                                  "synthetic.per_class=50"]
    assert parse_arguments(["score", "--dataset", "demo", "--raw", "/data/drop"]).overrides == [
        "score.dataset=demo", "score.raw_uri=/data/drop"]


def test_generate_with_a_bad_count_exits_2_before_any_spark_work(caplog, own_logging):
    assert main(["generate", "--per-class", "0"]) == EXIT_BAD_INPUT
    assert "synthetic.per_class" in caplog.text


def test_overrides_may_follow_flags_and_unknown_flags_still_fail(capsys, tmp_path, monkeypatch, own_logging):
    monkeypatch.chdir(tmp_path)
    assert main(["show-config", "ingest.dataset=parts", "--conf", str(tmp_path / "none.yaml")]) == EXIT_BAD_INPUT
    assert main(["show-config", "ingest.dataset=parts", "--conf", str(REPO / "conf" / "local.yaml"), "lake.root=/x"]) == 0
    shown = capsys.readouterr().out
    assert "\ningest.dataset=parts " in shown and "\nlake.root=/x " in shown
    with pytest.raises(SystemExit):
        main(["show-config", "--no-such-flag"])


def test_a_flag_is_an_option_that_sets_one_config_key():
    import argparse

    from visionlake.operate.cli import Flag

    parser = argparse.ArgumentParser()
    Flag("--per-class", "synthetic.per_class", "images per class", type=int).add_to(parser)
    Flag("--kind", "generative.model", "kind", ("autoencoder", "vae"), default="autoencoder").add_to(parser)
    (per_class, kind) = [action for action in parser._actions if action.dest in ("per_class", "kind")]
    assert (per_class.option_strings, per_class.type, per_class.default) == (["--per-class"], int, None)
    assert per_class.help == "images per class (sets synthetic.per_class)"
    assert kind.choices == ("autoencoder", "vae") and kind.help == "kind (sets generative.model; default autoencoder)"
    assert vars(parser.parse_args(["--per-class", "5"])) == {"per_class": 5, "kind": "autoencoder"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "gan"])


def test_a_command_s_flags_become_overrides_in_order_after_the_settings_it_implies():
    import argparse

    from visionlake.operate.cli import flag_overrides

    args = argparse.Namespace(dataset="parts", kind="vae")
    assert flag_overrides("train autoencoder", args) == ["train.dataset=parts", "generative.model=vae"]
    assert flag_overrides("train vae", argparse.Namespace(dataset=None)) == ["generative.model=vae"]
    assert flag_overrides("show-config", args) == []  # a command without flags
    assert flag_overrides("vacuum", argparse.Namespace(dataset="d", retention_hours=0.0)) == [
        "ingest.dataset=d", "lake.retention_hours=0.0"]


def test_every_command_takes_its_flags_switches_conf_verbose_and_overrides():
    import argparse

    from visionlake.operate.cli import add_command_arguments, add_config_arguments, parse_command_line

    vacuum = argparse.ArgumentParser(prog="vacuum")
    add_command_arguments(vacuum, "vacuum")
    args = parse_command_line(vacuum, ["--dry-run", "--conf", "a.yaml", "x.y=1", "--dataset", "d", "--conf",
                                       "b.yaml", "--retention-hours", "2", "z.w=2"])
    assert (args.dry_run, args.dataset, args.retention_hours, args.verbose) == (True, "d", 2.0, False)
    assert args.conf == ["a.yaml", "b.yaml"] and args.overrides == ["x.y=1", "z.w=2"]
    plain = argparse.ArgumentParser(prog="plain")
    add_config_arguments(plain)
    assert vars(parse_command_line(plain, ["--verbose"])) == {"conf": None, "verbose": True, "overrides": []}
    for stray in (["--no-such-flag"], ["x.y=1", "--verbose", "not-an-override"]):
        with pytest.raises(SystemExit) as exit_:
            parse_command_line(plain, stray)
        assert exit_.value.code == 2


def test_the_visionlake_parser_has_one_subcommand_per_command_and_per_trainer():
    from visionlake.operate.cli import TRAINERS, _HELPS, build_parser

    parser = build_parser()
    gan = parser.parse_args(["train", "gan", "--model", "dcgan", "--dataset", "mnist"])
    assert (gan.command, gan.trainer, gan.model, gan.dataset) == ("train", "gan", "dcgan", "mnist")
    commands = next(a for a in parser._actions if a.dest == "command")
    assert set(commands.choices) == set(_HELPS) and "train" in commands.choices
    assert set(next(a for a in commands.choices["train"]._actions if a.dest == "trainer").choices) == set(TRAINERS)
    with pytest.raises(SystemExit):
        parser.parse_args(["train"])  # a trainer is required


def test_a_job_knows_it_runs_under_spark_submit_by_the_gateway_port(monkeypatch):
    from visionlake.spark import launched_by_spark_submit

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert launched_by_spark_submit() is False
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")
    assert launched_by_spark_submit() is True
