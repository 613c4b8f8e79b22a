"""Batch scoring: classify and anomaly-score a lake table (or a raw drop, ingested first) with registered models.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/batch_inference.py --dataset mnist --conf conf/mnist.yaml \
        score.classifier=models:/visionlake-classifier@champion
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("batch_inference", sys.argv[1:]))
