"""Unit tests of plugins/mlops/triggers/, one module each."""
