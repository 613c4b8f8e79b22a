"""Scoring: batch jobs that load registered models and write their results to the lake."""
