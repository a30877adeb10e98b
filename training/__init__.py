"""Training scripts for the bundled demo models (run from the repo root: python -m training.<name>)."""
