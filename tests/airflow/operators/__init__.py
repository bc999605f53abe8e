"""Unit tests of plugins/mlops/operators/, one module each."""
