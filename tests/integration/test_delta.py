"""The sessions visionlake opens read and write Delta Lake tables: the jars, the extension and the catalog."""
from __future__ import annotations


def test_a_session_writes_reads_and_time_travels_a_delta_table(spark, tmp_path):
    path = str(tmp_path / "table")
    spark.range(5).write.format("delta").save(path)
    spark.range(5, 8).write.format("delta").mode("append").save(path)

    assert spark.read.format("delta").load(path).count() == 8
    assert spark.sql(f"SELECT count(*) AS n FROM delta.`{path}`").first().n == 8  # the catalog's SQL path
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 5
    assert [row.version for row in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()] == [1, 0]
