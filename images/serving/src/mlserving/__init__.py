"""mlserving: a KServe model server for the registry's MLflow-logged scikit-learn models."""

__version__ = "0.1.0"
