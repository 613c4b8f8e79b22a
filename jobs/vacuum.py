"""Vacuum: remove a dataset's files that newer versions superseded longer ago than lake.retention_hours.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/vacuum.py --dataset mnist --conf conf/mnist.yaml --dry-run
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("vacuum", sys.argv[1:]))
