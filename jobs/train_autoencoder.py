"""Train a convolutional VAE or autoencoder with Horovod on Spark; register and gate it in MLflow.

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/train_autoencoder.py --kind vae --dataset mnist --conf conf/mnist.yaml generative.epochs=10
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("train_autoencoder", sys.argv[1:]))
