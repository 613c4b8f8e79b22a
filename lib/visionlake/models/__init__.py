"""Model definitions: plain Keras networks and the MLflow scorer, no training and no Spark."""
