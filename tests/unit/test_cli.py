import subprocess
import sys

from tests.conftest import REPO
from visionlake.cli import EXIT_BAD_INPUT, main


def test_bad_config_exits_2_naming_the_key_before_any_spark_work(caplog):
    assert main(["ingest", "ingest.imgae.height=3"]) == EXIT_BAD_INPUT
    assert "unknown config key ingest.imgae" in caplog.text


def test_help_shows_a_real_example():
    result = subprocess.run([sys.executable, "-m", "visionlake.cli", "ingest", "--help"], capture_output=True,
                            text=True, check=True)
    assert "visionlake ingest --conf conf/mnist.yaml" in result.stdout


def test_show_config_prints_the_resolved_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show-config", "ingest.dataset=parts"]) == 0
    assert '"dataset": "parts"' in capsys.readouterr().out


def test_flags_become_config_overrides_and_explicit_overrides_win():
    import argparse

    from visionlake.cli import flag_overrides

    gan = argparse.Namespace(command="train", kind="gan", dataset="mnist", model="dcgan", per_class=None)
    assert flag_overrides(gan) == ["train.dataset=mnist", "generative.model=dcgan"]
    vae = argparse.Namespace(command="train", kind="vae", dataset=None, model=None, per_class=None)
    assert flag_overrides(vae) == ["generative.model=vae"]
    generate = argparse.Namespace(command="generate", dataset="demo", model="visionlake-cdcgan@champion",
                                  per_class=50)
    assert flag_overrides(generate) == ["train.dataset=demo", "synthetic.model=visionlake-cdcgan@champion",
                                        "synthetic.per_class=50"]


def test_generate_with_a_bad_count_exits_2_before_any_spark_work(caplog):
    assert main(["generate", "--per-class", "0"]) == EXIT_BAD_INPUT
    assert "synthetic.per_class" in caplog.text


def test_overrides_may_follow_flags_and_unknown_flags_still_fail(capsys, tmp_path, monkeypatch):
    import pytest

    monkeypatch.chdir(tmp_path)
    assert main(["show-config", "ingest.dataset=parts", "--conf", str(tmp_path / "none.yaml")]) == EXIT_BAD_INPUT
    assert main(["show-config", "ingest.dataset=parts", "--conf", str(REPO / "conf" / "local.yaml"), "lake.root=/x"]) == 0
    shown = capsys.readouterr().out
    assert '"dataset": "parts"' in shown and '"root": "/x"' in shown
    with pytest.raises(SystemExit):
        main(["show-config", "--no-such-flag"])
