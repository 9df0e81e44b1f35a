"""Converters from each benchmark's own published annotation files to the release's JSON formats
(`singularity-vl prepare NAME ...`)."""
