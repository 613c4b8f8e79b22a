"""Train, calibrate and register an anomaly detector on normal images (autoencoder, VAE, GAN or classifier energy).

    spark-submit --jars 'dist/jars/*.jar' --py-files dist/visionlake-0.1.0-py3-none-any.whl \
        jobs/train_anomaly.py --method autoencoder --dataset mnist --conf conf/mnist.yaml \
        anomaly.normal_labels=[zero] anomaly.false_positive_rate=0.05
"""
import sys

from visionlake.operate.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("train_anomaly", sys.argv[1:]))
