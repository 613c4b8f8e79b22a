"""Evaluation: pure measures (accuracy, FCD, AUROC, calibration) and the judges that apply them."""
