"""Unit tests of plugins/mlops/hooks/, one module each."""
