"""Training on Horovod ranks: the launcher, the rank loop, checkpoints, and one trainer per model family."""
