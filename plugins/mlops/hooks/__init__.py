"""See mlops/__init__.py."""
