import subprocess
import sys

from tests.conftest import REPO
from visionlake.operate.cli import EXIT_BAD_INPUT, main
from visionlake.config import load_config


def test_bad_config_exits_2_naming_the_key_before_any_spark_work(caplog):
    assert main(["ingest", "ingest.imgae.height=3"]) == EXIT_BAD_INPUT
    assert "unknown config key ingest.imgae" in caplog.text


def test_help_shows_a_real_example():
    result = subprocess.run([sys.executable, "-m", "visionlake.operate.cli", "ingest", "--help"], capture_output=True,
                            text=True, check=True)
    assert "visionlake ingest --conf conf/mnist.yaml" in result.stdout


def test_show_config_prints_the_resolved_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show-config", "ingest.dataset=parts"]) == 0
    shown = {line.split()[0]: line.rsplit("# ", 1)[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert shown["ingest.dataset=parts"] == "override" and shown["ingest.dataset=parts"] != shown["lake.root=" + str(
        tmp_path / "lake")]


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


def test_generate_with_a_bad_count_exits_2_before_any_spark_work(caplog):
    assert main(["generate", "--per-class", "0"]) == EXIT_BAD_INPUT
    assert "synthetic.per_class" in caplog.text


def test_overrides_may_follow_flags_and_unknown_flags_still_fail(capsys, tmp_path, monkeypatch):
    import pytest

    monkeypatch.chdir(tmp_path)
    assert main(["show-config", "ingest.dataset=parts", "--conf", str(tmp_path / "none.yaml")]) == EXIT_BAD_INPUT
    assert main(["show-config", "ingest.dataset=parts", "--conf", str(REPO / "conf" / "local.yaml"), "lake.root=/x"]) == 0
    shown = capsys.readouterr().out
    assert "\ningest.dataset=parts " in shown and "\nlake.root=/x " in shown
    with pytest.raises(SystemExit):
        main(["show-config", "--no-such-flag"])
