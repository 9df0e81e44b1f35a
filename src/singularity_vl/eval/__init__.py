"""Evaluation: retrieval re-ranking and the release's metrics."""
