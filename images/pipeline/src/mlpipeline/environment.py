"""Environment variables set for the length of a block (standard library only: the Airflow side uses it too).

MLflow's client reads its settings (tracking URI, retries, timeout) from the process environment on every
request and takes no per-call value, so a setting for some calls only is an environment value put back
afterwards. Only the names given are touched: anything else the block changes stays changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ inside the block; each name as it was (or absent) afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
