"""Progress logging: to stderr, so stdout carries only the stage's JSON result."""

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "alembic", "git", "mlflow.tracking._tracking_service", "mlflow.models.model"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
