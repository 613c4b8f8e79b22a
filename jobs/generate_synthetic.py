"""Generate labelled synthetic images with a registered conditional generator into a dataset's synthetic table.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/generate_synthetic.py --model visionlake-cdcgan@champion --per-class 1000 --dataset mnist \
        --conf conf/mnist.yaml
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("generate_synthetic", sys.argv[1:]))
