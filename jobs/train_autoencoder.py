"""Train a convolutional VAE or autoencoder with Horovod on Spark; register and gate it in MLflow.

    spark-submit --py-files dist/visionlake-0.1.0-py3-none-any.whl jobs/train_autoencoder.py --kind vae \
        --dataset mnist --conf conf/mnist.yaml generative.epochs=10
"""
import sys

from visionlake.cli import add_train_arguments, run_job, train_generative_job


def arguments(parser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--kind", choices=["vae", "autoencoder"], default="vae",
                        help="which model (sets generative.model)")


if __name__ == "__main__":
    sys.exit(run_job(train_generative_job, "Train a VAE or an autoencoder on a visionlake dataset.", sys.argv[1:],
                     command="train", add_arguments=arguments))
