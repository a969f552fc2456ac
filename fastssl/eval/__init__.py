"""Evaluation of frozen encoders: weighted kNN and linear probe."""
