"""Delta Lake's jars and session settings: what every session visionlake opens adds to the user's Spark conf."""
from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from visionlake.spark import (DELTA_SESSION_CONF, SparkSetupError, delta_conf, delta_package, installed_jars,
                              jars_folder)


def _environment_with_jars(tmp_path, *names: str) -> str:
    folder = jars_folder(str(tmp_path))
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"PK")
    return str(tmp_path)


def test_a_session_gets_the_installed_jars_after_the_users_own_and_delta_s_extension_and_catalog(tmp_path):
    prefix = _environment_with_jars(tmp_path, "io.delta_delta-storage-3.3.2.jar", "io.delta_delta-spark_2.12-3.3.2.jar")

    conf = delta_conf({"spark.jars": "/opt/extra.jar"}, prefix)

    jars = conf["spark.jars"].split(",")
    assert jars[0] == "/opt/extra.jar"
    assert [os.path.basename(jar) for jar in jars[1:]] == ["io.delta_delta-spark_2.12-3.3.2.jar",
                                                           "io.delta_delta-storage-3.3.2.jar"]
    assert {key: conf[key] for key in DELTA_SESSION_CONF} == DELTA_SESSION_CONF


def test_the_users_own_delta_jars_package_and_settings_win(tmp_path):
    assert "spark.jars" not in delta_conf({"spark.jars.packages": delta_package()}, str(tmp_path))
    assert "spark.jars" not in delta_conf({"spark.jars": "/copies/delta-spark_2.12-3.3.2.jar"}, str(tmp_path))
    mine = {"spark.sql.extensions": "my.Extension", "spark.jars.packages": delta_package()}
    assert "spark.sql.extensions" not in delta_conf(mine, str(tmp_path))


def test_no_installed_jars_fail_with_how_to_get_them(tmp_path):
    with pytest.raises(SparkSetupError, match=r"run `visionlake jars --fetch`.*spark.conf.spark.jars"):
        delta_conf({}, str(tmp_path))


def test_the_jars_pair_with_the_installed_delta_spark_and_pysparks_scala():
    assert delta_package() == f"io.delta:delta-spark_2.12:{version('delta-spark')}"
    # make setup fetched them into this environment (visionlake jars --fetch)
    names = [os.path.basename(jar) for jar in installed_jars()]
    assert f"io.delta_delta-spark_2.12-{version('delta-spark')}.jar" in names, names


def test_visionlake_jars_prints_them_comma_separated_for_spark_submit(capsys):
    from visionlake.operate.cli import main

    assert main(["jars"]) == 0
    assert capsys.readouterr().out.strip().split(",") == installed_jars()
