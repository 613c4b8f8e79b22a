"""Optimize: compact a dataset's small files (Delta OPTIMIZE of each table, in lake.row_group_bytes row groups).

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/optimize.py --dataset mnist --conf conf/mnist.yaml
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("optimize", sys.argv[1:]))
