"""Train an image classifier with Horovod on Spark over a lake dataset; track, register and gate it in MLflow.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/train_classifier.py --dataset mnist --conf conf/mnist.yaml train.model=resnet_small train.num_proc=8
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("train_classifier", sys.argv[1:]))
