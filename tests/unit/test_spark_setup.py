"""Delta Lake's jars and session settings: what every session visionlake opens adds to the user's Spark conf."""
from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from visionlake.spark import (DELTA_CATALOG, DELTA_EXTENSION, SparkSetupError, delta_conf, delta_package,
                              fetch_jars, installed_jars, jars_folder)


def _environment_with_jars(tmp_path, *names: str, resolved_for: str = "") -> str:
    folder = jars_folder(str(tmp_path))
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"PK")
    if resolved_for:
        (folder / ".resolved").write_text(resolved_for + "\n")
    return str(tmp_path)


def test_a_session_gets_the_installed_jars_after_the_users_own_and_delta_s_extension_and_catalog(tmp_path):
    prefix = _environment_with_jars(tmp_path, "io.delta_delta-storage-3.3.2.jar", "io.delta_delta-spark_2.12-3.3.2.jar")

    conf = delta_conf({"spark.jars": "/opt/extra.jar"}, prefix)

    jars = conf["spark.jars"].split(",")
    assert jars[0] == "/opt/extra.jar"
    assert [os.path.basename(jar) for jar in jars[1:]] == ["io.delta_delta-spark_2.12-3.3.2.jar",
                                                           "io.delta_delta-storage-3.3.2.jar"]
    assert dict([DELTA_EXTENSION, DELTA_CATALOG]) == {key: conf[key] for key, _ in (DELTA_EXTENSION, DELTA_CATALOG)}


def test_the_users_own_delta_jars_package_and_settings_win(tmp_path):
    assert "spark.jars" not in delta_conf({"spark.jars.packages": delta_package()}, str(tmp_path))
    assert "spark.jars" not in delta_conf({"spark.jars": "/copies/delta-spark_2.12-3.3.2.jar"}, str(tmp_path))
    # Delta's extension joins the user's own (Spark takes a list); the user's own catalog stays.
    mine = {"spark.sql.extensions": "my.Extension", "spark.sql.catalog.spark_catalog": "my.Catalog",
            "spark.jars.packages": delta_package()}
    conf = delta_conf(mine, str(tmp_path))
    assert conf["spark.sql.extensions"] == f"my.Extension,{DELTA_EXTENSION[1]}"
    assert "spark.sql.catalog.spark_catalog" not in conf
    assert "spark.sql.extensions" not in delta_conf({**mine, "spark.sql.extensions": DELTA_EXTENSION[1]},
                                                    str(tmp_path))


def test_no_installed_jars_or_jars_of_another_release_fail_with_how_to_get_them(tmp_path):
    with pytest.raises(SparkSetupError, match=r"\(no jars\): run `visionlake jars --fetch`.*spark.conf.spark.jars"):
        delta_conf({}, str(tmp_path / "empty"))
    stale = _environment_with_jars(tmp_path, "io.delta_delta-spark_2.12-3.2.0.jar",
                                   resolved_for="io.delta:delta-spark_2.12:3.2.0")
    with pytest.raises(SparkSetupError, match=r"\(jars for io.delta:delta-spark_2.12:3.2.0\): run `visionlake jars"):
        delta_conf({}, stale)


def test_a_fetch_of_jars_already_resolved_for_this_release_starts_no_spark(tmp_path):
    prefix = _environment_with_jars(tmp_path, "io.delta_delta-spark_2.12-x.jar", resolved_for=delta_package())
    assert fetch_jars(prefix) == installed_jars(prefix)  # no session: this process has none, and starts none


def test_the_jars_pair_with_the_installed_delta_spark_and_pysparks_scala():
    assert delta_package() == f"io.delta:delta-spark_2.12:{version('delta-spark')}"
    # make setup fetched them into this environment (visionlake jars --fetch)
    names = [os.path.basename(jar) for jar in installed_jars()]
    assert f"io.delta_delta-spark_2.12-{version('delta-spark')}.jar" in names, names


def test_visionlake_jars_prints_them_comma_separated_for_spark_submit(capsys):
    from visionlake.operate.cli import main

    assert main(["jars"]) == 0
    assert capsys.readouterr().out.strip().split(",") == installed_jars()
