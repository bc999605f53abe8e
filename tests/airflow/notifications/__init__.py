"""Unit tests of plugins/mlops/notifications/, one module each."""
