"""Training application: optimisation recipe, checkpoints (the loop itself builds on these)."""
