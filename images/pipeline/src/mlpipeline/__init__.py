"""mlpipeline: the ML core of the continuous-training platform."""

__version__ = "0.1.0"
