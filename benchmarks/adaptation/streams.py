"""The drift streams of the adaptation benchmark: river's synthetic generators, cut into labelled partitions on a
declared schedule.

Each stream is a sequence of concepts (a river generator each, seeded from the stream's seed): partition t is
drawn from the concept the schedule gives it, continuing that generator, so a concept that comes back (A -> B
-> A) draws new rows of the same function. `drifts` are the partitions where a new concept starts (abrupt) or
where a gradual drift moves the concept (every partition of its span); the controls declare none.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from river.datasets import synth

# The generators' seeds for the tuned runs; --fresh-seeds draws others.
TUNING_SEEDS = {"sea-abrupt": 11, "hyperplane-gradual": 12, "agrawal-switch": 13, "recurring": 14,
                "noise-only": 15, "no-drift": 16}


@dataclass(frozen=True)
class Feature:
    name: str
    categorical: bool = False


@dataclass(frozen=True)
class Stream:
    name: str
    description: str
    features: tuple[Feature, ...]
    partitions: int
    rows: int
    kind: str                    # abrupt | gradual | control
    drifts: tuple[int, ...]      # partitions where the concept changes (declared, for the oracle and the delay)
    make: Callable[[int, int], Callable[[int], pd.DataFrame]] = field(repr=False)  # (seed, rows) -> t -> rows

    @property
    def drifting(self) -> bool:
        return self.kind != "control"


def _frame(pairs, names: list[str]) -> pd.DataFrame:
    rows = [{**{name: x[key] for name, key in zip(names, x, strict=True)}, "label": f"c{int(y)}"} for x, y in pairs]
    return pd.DataFrame(rows, columns=[*names, "label"])


def _concepts(concepts: list, schedule: Callable[[int], int], rows: int, names: list[str]):
    """partition -> rows of the concept the schedule gives it, each concept's generator continued."""
    iterators = [iter(c) for c in concepts]
    return lambda t: _frame(itertools.islice(iterators[schedule(t)], rows), names)


def _step(drifts: tuple[int, ...]) -> Callable[[int], int]:
    """The concept index at partition t: how many declared drifts have happened."""
    return lambda t: sum(t >= d for d in drifts)


SEA_NAMES = ["x0", "x1", "x2"]
AGRAWAL_NAMES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
AGRAWAL_FEATURES = tuple(Feature(n, categorical=n in ("elevel", "car", "zipcode")) for n in AGRAWAL_NAMES)
HYPERPLANE_NAMES = [f"h{i}" for i in range(10)]


def sea_abrupt(seed: int, rows: int):
    """SEA's four thresholds in turn (8, 9, 7, 9.5 on x0 + x1), 10 % label noise: three abrupt changes."""
    drifts = (6, 12, 18)
    concepts = [synth.SEA(variant=v, noise=0.1, seed=seed + v) for v in range(4)]
    return _concepts(concepts, _step(drifts), rows, SEA_NAMES)


def hyperplane_gradual(seed: int, rows: int):
    """A 10-dimensional rotating hyperplane that stands still, rotates through partitions 8-15 (5 of its weights
    grow by 5e-5 per row), then stands still again; 5 % label noise."""
    generator = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.0,
                                 noise_percentage=0.05, sigma=0.0)
    iterator = iter(generator)

    def partition(t: int) -> pd.DataFrame:
        generator.mag_change = 5e-5 if 8 <= t < 16 else 0.0  # read by the generator at every row
        return _frame(itertools.islice(iterator, rows), HYPERPLANE_NAMES)
    return partition


def agrawal_switch(seed: int, rows: int):
    """Agrawal's loan-approval functions switched twice (function 1, then 4 at partition 8, then 7 at 16),
    5 % perturbation; three of its nine features are categorical."""
    drifts = (8, 16)
    concepts = [synth.Agrawal(classification_function=f, perturbation=0.05, seed=seed + f) for f in (1, 4, 7)]
    return _concepts(concepts, _step(drifts), rows, AGRAWAL_NAMES)


def recurring(seed: int, rows: int):
    """A recurring concept: SINE1 (x1 below sin(x0)), SINE2 (x1 below 0.5 + 0.3 sin(3 pi x0)) from
    partition 8, SINE1 again from 16."""
    concepts = [synth.Sine(classification_function=f, seed=seed + f) for f in (0, 2)]
    return _concepts(concepts, lambda t: 1 if 8 <= t < 16 else 0, rows, ["s0", "s1"])


def noise_only(seed: int, rows: int):
    """One SEA concept with 25 % of the labels flipped throughout: noisy, but nothing changes."""
    return _concepts([synth.SEA(variant=2, noise=0.25, seed=seed)], lambda t: 0, rows, SEA_NAMES)


def no_drift(seed: int, rows: int):
    """One Agrawal concept (function 2), 5 % perturbation, for 20 partitions: nothing changes."""
    return _concepts([synth.Agrawal(classification_function=2, perturbation=0.05, seed=seed)], lambda t: 0, rows,
                     AGRAWAL_NAMES)


STREAMS = (
    Stream("sea-abrupt", sea_abrupt.__doc__, tuple(Feature(n) for n in SEA_NAMES), 24, 3000, "abrupt", (6, 12, 18),
           sea_abrupt),
    Stream("hyperplane-gradual", hyperplane_gradual.__doc__, tuple(Feature(n) for n in HYPERPLANE_NAMES), 24, 3000,
           "gradual", tuple(range(8, 16)), hyperplane_gradual),
    Stream("agrawal-switch", agrawal_switch.__doc__, AGRAWAL_FEATURES, 24, 3000, "abrupt", (8, 16), agrawal_switch),
    Stream("recurring", recurring.__doc__, (Feature("s0"), Feature("s1")), 24, 3000, "abrupt", (8, 16), recurring),
    Stream("noise-only", noise_only.__doc__, tuple(Feature(n) for n in SEA_NAMES), 20, 3000, "control", (),
           noise_only),
    Stream("no-drift", no_drift.__doc__, AGRAWAL_FEATURES, 20, 3000, "control", (), no_drift),
)
