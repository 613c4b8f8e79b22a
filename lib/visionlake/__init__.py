"""visionlake: image lake, distributed training and scoring on Apache Spark."""
__version__ = "0.1.0"
