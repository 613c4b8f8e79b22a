"""Ingest raw images into the lake: validated, normalised Parquet + TFRecord shards, quarantine for bad files.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/ingest.py --conf conf/mnist.yaml ingest.source.uri=hdfs:///raw/mnist_png lake.root=hdfs:///lake
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("ingest", sys.argv[1:]))
