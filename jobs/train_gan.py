"""Train a DCGAN or conditional DCGAN with Horovod on Spark; FCD and samples in MLflow; register and gate it.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/train_gan.py --model cdcgan --dataset mnist --conf conf/mnist.yaml generative.epochs=10 train.num_proc=8
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("train_gan", sys.argv[1:]))
