"""visionlake: a distributed image pipeline on Apache Spark (ingest -> train -> score).

The metadata lives in pyproject.toml (PEP 621); this shim keeps ``python setup.py ...`` tooling working.
"""
from setuptools import setup

setup()
