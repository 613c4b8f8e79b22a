import subprocess
import sys

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
