"""Unit tests of plugins/mlops/sensors/, one module each."""
