"""visionlake: a distributed image pipeline on Apache Spark (ingest -> train -> score)."""
from setuptools import find_packages, setup

setup(
    name="visionlake",
    version="0.1.0",
    description="Distributed image pipeline on Apache Spark: image lake, Horovod training, MLflow, batch scoring.",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"visionlake": ["conf/*.yaml"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "pyspark>=3.5,<3.6",
        "pyarrow>=14,<15",
        "numpy>=1.26,<2",
        "pandas>=2.1,<2.2",
        "pillow>=10",
        "pyyaml>=6",
        "petastorm==0.13.1",
        "tensorflow-cpu>=2.15,<2.16",
        "mlflow>=3,<4",
        "google-crc32c>=1.5",
    ],
    extras_require={
        "test": ["pytest>=8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6"],  # notebooks run in the suite
        "notebooks": ["jupyterlab>=4"],
        # bench/photo_bench.py builds its photo drop from the photographs scikit-image ships; never a job dependency
        "bench": ["scikit-image>=0.22"],
    },
    entry_points={"console_scripts": ["visionlake=visionlake.cli:main"]},
)
