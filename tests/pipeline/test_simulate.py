"""The batch simulator: a smoothed bootstrap of a reference sample, what each drift kind does, the formats
it writes and the `simulate` stage, on every classification test dataset (tests/datasets/) and the example
(iris). A regression label's references and drifts: test_simulate_regression.py."""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlpipeline.dataset import Source
from mlpipeline.errors import PipelineError
from mlpipeline.simulate import (
    Recalibration,
    batch_name,
    column_name,
    default_reference,
    load_reference,
    parse_recalibration,
    prepare_reference,
    simulate,
    to_bytes,
)
from mlpipeline.validate import validate_batch
from tests import datasets

from .helpers import run_cli

# iris (the example), wine, breast-cancer, cancer-mixed: the test datasets with classes
NAMES = tuple(n for n in datasets.NAMES if not datasets.load(n).regression)
ROWS = 4000
FORMATS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}


@functools.cache
def dataset(name: str, fmt: str | None = None):
    loaded = datasets.load(name)
    return loaded if fmt is None else dataclasses.replace(loaded, source=Source(format=fmt))


@functools.cache
def reference(name: str):
    return prepare_reference(datasets.reference_frame(name), dataset(name), f"tests/datasets.py:{name}")


def batch(name: str, drift: str = "none", severity: float = 1.0, seed: int = 1, rows: int = ROWS) -> pd.DataFrame:
    return simulate(dataset(name), rows, drift, severity, seed, reference(name))


def numeric(name: str) -> list[str]:
    return [f.name for f in dataset(name).features if f.numeric]


def categorical(name: str) -> list[str]:
    return [f.name for f in dataset(name).features if not f.numeric]


def pooled_std(frame: pd.DataFrame, column: str, label: str) -> float:
    groups = frame[[column, label]].dropna().groupby(label)[column]
    freedom = groups.count() - 1
    return float(np.sqrt((freedom * groups.var()).sum() / freedom.sum()))


def features(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[dataset(name).feature_names].copy()
    for column in categorical(name):
        out[column] = out[column].astype(object).where(out[column].notna(), np.nan)
    return out


def clean_model(name: str, train: pd.DataFrame):
    """A quick linear model: impute, scale or one-hot encode, logistic regression."""
    prepare = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), numeric(name)),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore")), categorical(name)),
    ])
    model = make_pipeline(prepare, LogisticRegression(max_iter=2000))
    return model.fit(features(name, train), train[dataset(name).label])


def flexible_model(name: str, train: pd.DataFrame):
    """Gradient-boosted trees: they can learn a relabelled region of the feature space."""
    frame = features(name, train).astype({c: "category" for c in categorical(name)})
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=50, random_state=0)
    return model.fit(frame, train[dataset(name).label])


def accuracy(name: str, model, frame: pd.DataFrame, flexible: bool = False) -> float:
    inputs = features(name, frame)
    if flexible:
        inputs = inputs.astype({c: "category" for c in categorical(name)})
    return float(np.mean(model.predict(inputs) == frame[dataset(name).label].to_numpy()))


# ---- the test datasets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_test_dataset_parses_and_its_reference_holds_its_columns(name):
    ds = dataset(name)
    frame = datasets.reference_frame(name)
    assert set(ds.columns) <= set(frame.columns)
    assert datasets.reference_frame(name).equals(frame), "the reference is built the same every time"
    if name == "iris":
        assert datasets.dataset_path(name) == datasets.EXAMPLE
    else:
        assert datasets.dataset_path(name).parent == datasets.DATASETS_DIR


def test_the_test_datasets_are_what_the_brief_and_their_comments_say():
    wine, cancer, mixed = (dataset(n) for n in ("wine", "breast-cancer", "cancer-mixed"))
    assert (len(wine.features), len(wine.classes), wine.metric, wine.estimator) == (13, 3, "balanced_accuracy",
                                                                                   "random_forest")
    assert wine.params["n_estimators"] <= 50
    assert (len(cancer.features), len(cancer.classes), cancer.metric, cancer.estimator) == (
        30, 2, "macro_f1", "hist_gradient_boosting")
    assert (mixed.classes, mixed.metric, mixed.estimator) == ((), "accuracy", "logistic_regression")
    assert {f.name for f in mixed.features if not f.numeric} == {"area_band", "smoothness_band", "compactness_band",
                                                                 "concavity_grade"}
    frame = datasets.reference_frame("cancer-mixed")
    nullable = [f.name for f in mixed.features if f.nullable]
    assert len(nullable) == 3 and any(not mixed.feature(n).numeric for n in nullable)
    for column in nullable:
        assert frame[column].isna().mean() == pytest.approx(0.05, abs=0.005)
    assert frame.drop(columns=nullable).notna().all().all()
    assert set(frame["area_band"]) == {"low", "mid", "high"}
    assert frame["concavity_grade"].nunique() == 5
    shares = frame["concavity_grade"].value_counts(normalize=True)
    assert shares.max() > 3 * shares.min(), "unequal frequencies: the rarest category is well defined"


@pytest.mark.parametrize("name, builtin", [("iris", "iris"), ("wine", "wine"), ("breast-cancer", "breast_cancer")])
def test_sklearn_references_name_columns_as_the_dataset_files_do(name, builtin):
    assert default_reference(dataset(name)) == f"sklearn:{builtin}"
    loaded = load_reference(f"sklearn:{builtin}", dataset(name))
    ours = reference(name)
    assert loaded.classes == ours.classes and np.array_equal(loaded.labels, ours.labels)
    for column in numeric(name):
        assert np.array_equal(loaded.numeric[column], ours.numeric[column])


def test_column_names_of_the_sklearn_references():
    assert column_name("sepal length (cm)") == "sepal_length"
    assert column_name("mean concave points") == "mean_concave_points"
    assert column_name("od280/od315_of_diluted_wines") == "od280_od315_of_diluted_wines"


# ---- clean batches -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_clean_batch_looks_like_its_reference(name):
    ds, ref = dataset(name), datasets.reference_frame(name)
    frame = batch(name, seed=2)
    assert list(frame.columns) == ds.columns and len(frame) == ROWS
    for feature in ds.features:
        column = frame[feature.name]
        if feature.numeric:
            assert column.dtype == np.float64
            present = column.dropna()
            assert present.between(feature.min, feature.max).all()
            spread = ref[feature.name].std()
            assert present.mean() == pytest.approx(ref[feature.name].mean(), abs=0.1 * spread)
            assert present.std() == pytest.approx(spread, rel=0.1)
        else:
            assert pd.api.types.is_string_dtype(column)
            shares = column.value_counts(normalize=True)
            expected = ref[feature.name].value_counts(normalize=True)
            assert set(shares.index) == set(expected.index)
            assert (shares - expected).abs().max() < 0.03
        missing, expected_missing = column.isna().mean(), ref[feature.name].isna().mean()
        assert missing == pytest.approx(expected_missing, abs=0.015)
        if not feature.nullable:
            assert missing == 0
    assert pd.api.types.is_string_dtype(frame[ds.label])
    counts = frame[ds.label].value_counts()
    assert set(counts.index) == set(ref[ds.label])
    assert (counts - ROWS * ref[ds.label].value_counts(normalize=True)).abs().max() < 1, "the reference's class mix"
    validated = validate_batch(to_bytes(frame, ds.source.format), f"b{FORMATS[ds.source.format]}", ds)
    assert validated.ok, validated.violations


@pytest.mark.parametrize("rows", [1, 10, 200_000])
def test_sizes_are_exact_and_valid(rows):
    frame = batch("iris", rows=rows, seed=rows)
    assert len(frame) == rows
    counts = frame["species"].value_counts()
    assert counts.max() - counts.min() <= 1 and (len(counts) == 3 or rows < 3), "iris's classes are balanced"
    assert validate_batch(to_bytes(frame, "csv"), "b.csv", dataset("iris")).ok


def test_a_large_batch_holds_few_exact_duplicates():
    """Ingest refuses a file with over 5 % duplicate rows as a double export; 150 reference rows drawn a
    million times must not look like one."""
    assert batch("iris", rows=1_000_000, seed=3).duplicated().mean() < 0.001


# ---- drift -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", [0.5, 2.0])
@pytest.mark.parametrize("name", NAMES)
def test_covariate_drift_shifts_numeric_means_by_severity_pooled_stds(name, severity):
    ds, ref = dataset(name), datasets.reference_frame(name)
    clean, drifted = batch(name, seed=5), batch(name, "covariate", severity, seed=5)
    assert drifted[ds.label].equals(clean[ds.label]), "labels stay with their rows"
    for column in numeric(name):
        pooled = pooled_std(ref, column, ds.label)
        assert (drifted[column].mean() - clean[column].mean()) / pooled == pytest.approx(severity, abs=0.03)
        assert (drifted[column].mean() - ref[column].mean()) / pooled == pytest.approx(severity, abs=0.2)
        assert drifted[column].isna().equals(clean[column].isna())
        # The declared ranges are plausible, not tight: a shift of 2 pooled stds is not clipped away.
        assert (drifted[column] >= ds.feature(column).max).mean() < 0.001
    validated = validate_batch(to_bytes(drifted, ds.source.format), f"b{FORMATS[ds.source.format]}", ds)
    assert validated.ok, validated.violations


@pytest.mark.parametrize("severity", [0.5, 1.0, 2.0])
def test_covariate_drift_tilts_categories_towards_the_rarest(severity):
    ref = datasets.reference_frame("cancer-mixed")
    clean, drifted = batch("cancer-mixed", seed=6), batch("cancer-mixed", "covariate", severity, seed=6)
    strength = min(severity, 1.0)
    for column in categorical("cancer-mixed"):
        expected = ref[column].value_counts(normalize=True, dropna=True)  # commonest first
        present = drifted[column].notna()
        shares = drifted.loc[present, column].value_counts(normalize=True)
        commonest, rarest = expected.index[0], expected.index[-1]
        assert shares[rarest] > expected[rarest] + 0.15 * strength
        assert shares[commonest] < expected[commonest] - 0.15 * strength
        # q = (1 - s) p + s p_reversed: at s = 1 the rarest is as frequent as the commonest was.
        target = (1 - strength) * expected[rarest] + strength * expected[commonest]
        assert shares[rarest] == pytest.approx(target, abs=0.03)
        assert drifted[column].isna().equals(clean[column].isna()), "missing values stay missing"


@pytest.mark.parametrize("name", NAMES)
def test_concept_drift_relabels_a_share_of_rows_that_a_clean_model_gets_wrong(name):
    ds, ref = dataset(name), reference(name)
    severity = 0.4
    clean, drifted = batch(name, seed=7), batch(name, "concept", severity, seed=7)
    pd.testing.assert_frame_equal(drifted[ds.feature_names], clean[ds.feature_names])
    changed = drifted[ds.label] != clean[ds.label]
    assert changed.sum() == round(severity * ROWS)
    following = {c: ref.classes[(i + 1) % len(ref.classes)] for i, c in enumerate(ref.classes)}
    assert (drifted.loc[changed, ds.label] == clean.loc[changed, ds.label].map(following)).all(), \
        "each changed label is the next class of a fixed permutation"
    model = clean_model(name, batch(name, seed=1))
    before, after = accuracy(name, model, clean), accuracy(name, model, drifted)
    assert before > 0.85 and after < before - 0.3


@pytest.mark.parametrize("name", NAMES)
def test_concept_drift_is_a_new_relation_that_can_be_learned_and_label_noise_is_not(name):
    """Concept drift relabels a fixed region of the feature space, the same in every batch, so a model
    trained on drifted batches learns it; label noise relabels random rows, which no model can learn."""
    severity = 0.3
    concept = flexible_model(name, batch(name, "concept", severity, seed=8))
    noise = flexible_model(name, batch(name, "label_noise", severity, seed=8))
    assert accuracy(name, concept, batch(name, "concept", severity, seed=9), flexible=True) > 0.9
    assert accuracy(name, noise, batch(name, "label_noise", severity, seed=9), flexible=True) < 1 - severity + 0.05


@pytest.mark.parametrize("name", NAMES)
def test_label_noise_changes_that_share_of_labels_at_random(name):
    ds, ref = dataset(name), reference(name)
    severity = 0.3
    clean, noisy = batch(name, seed=10), batch(name, "label_noise", severity, seed=10)
    pd.testing.assert_frame_equal(noisy[ds.feature_names], clean[ds.feature_names])
    changed = noisy[ds.label] != clean[ds.label]
    assert changed.sum() == round(severity * ROWS)
    if len(ref.classes) > 2:  # another class at random: each of the others, not one fixed one
        pairs = pd.crosstab(clean.loc[changed, ds.label], noisy.loc[changed, ds.label])
        assert ((pairs > 0).sum(axis=1) == len(ref.classes) - 1).all()
    model = clean_model(name, batch(name, seed=1))
    assert accuracy(name, model, noisy) < accuracy(name, model, clean) - 0.2


def decimals(values: pd.Series) -> int:
    """The fewest decimals that write every value (missing ones aside) exactly."""
    present = values.dropna().to_numpy()
    return next(d for d in range(12) if np.allclose(np.round(present, d), present, rtol=0, atol=1e-9))


@pytest.mark.parametrize("name", NAMES)
def test_recalibration_rescales_the_named_numeric_features_and_nothing_else(name):
    """Two sensors recalibrated, one by a gain, one by a gain and an offset: their values become
    scale x + offset (rounded as every value is, clipped into the declared range); every other column, the
    labels and the missing values are the clean batch of the same seed's."""
    ds, ref = dataset(name), datasets.reference_frame(name)
    gain, both = numeric(name)[:2]
    recalibrations = (Recalibration(gain, 1.6), Recalibration(both, 0.9, 0.5 * float(ref[both].std())))
    clean = batch(name, seed=12)
    drifted = simulate(ds, ROWS, "recalibration", seed=12, reference=reference(name), recalibrations=recalibrations)
    untouched = [c for c in ds.columns if c not in (gain, both)]
    pd.testing.assert_frame_equal(drifted[untouched], clean[untouched])
    for recalibration in recalibrations:
        column, feature = recalibration.column, ds.feature(recalibration.column)
        expected = (recalibration.scale * clean[column] + recalibration.offset).clip(feature.min, feature.max)
        step = 10.0 ** -decimals(clean[column])  # what both batches are rounded to
        np.testing.assert_allclose(drifted[column], expected, rtol=0,
                                   atol=(abs(recalibration.scale) + 1) * step / 2 + 1e-12)
        assert not np.allclose(drifted[column].dropna(), clean[column].dropna()), "the readings changed"
        assert drifted[column].isna().equals(clean[column].isna())
    validated = validate_batch(to_bytes(drifted, ds.source.format), f"b{FORMATS[ds.source.format]}", ds)
    assert validated.ok, validated.violations


@pytest.mark.parametrize("text, expected", [
    ("petal_length*1.6", Recalibration("petal_length", 1.6)),
    ("sepal_width + 0.5", Recalibration("sepal_width", 1.0, 0.5)),
    ("petal_width*1.1-0.2", Recalibration("petal_width", 1.1, -0.2)),
    ("sepal_length*-1", Recalibration("sepal_length", -1.0)),
])
def test_a_recalibration_is_written_as_a_formula(text, expected):
    assert parse_recalibration(text, dataset("iris")) == expected
    assert parse_recalibration(str(expected), dataset("iris")) == expected, "str() writes what parses back"


def test_a_recalibrated_column_may_hold_the_formulas_characters():
    """The dataset's column names are matched first: "width-1-0.5" is width-1 shifted down by 0.5."""
    ds = dataset("iris")
    renamed = dataclasses.replace(ds, features=tuple(dataclasses.replace(f, name=f"{f.name}-1") for f in ds.features))
    assert parse_recalibration("petal_width-1-0.5", renamed) == Recalibration("petal_width-1", 1.0, -0.5)
    assert parse_recalibration("petal_width-1*2", renamed) == Recalibration("petal_width-1", 2.0)


IRIS_NUMERIC = "(numeric features: 'sepal_length', 'sepal_width', 'petal_length', 'petal_width')"


@pytest.mark.parametrize("name, text, message", [
    ("iris", "petal_lenght*1.6", f"--recalibrate 'petal_lenght*1.6': dataset 'iris' has no column 'petal_lenght' "
                                 f"{IRIS_NUMERIC}"),
    ("iris", "species*2", f"--recalibrate 'species*2': 'species' is the label; a recalibration changes what a "
                          f"feature's sensor reads {IRIS_NUMERIC}"),
    ("cancer-mixed", "area_band*2", "--recalibrate 'area_band*2': 'area_band' is a categorical feature; a "
                                    "recalibration rescales numeric readings (numeric features: 'mean_radius', "
                                    "'mean_texture', 'worst_concave_points')"),
    ("iris", "petal_length/2", "--recalibrate 'petal_length/2': not COLUMN*SCALE, COLUMN+OFFSET or "
                               "COLUMN*SCALE+OFFSET (e.g. sepal_length*1.6)"),
    ("iris", "petal_length", "not COLUMN*SCALE, COLUMN+OFFSET or COLUMN*SCALE+OFFSET"),
    ("iris", "petal_length*0", "the scale of 'petal_length' must be a finite number other than 0, got 0"),
    ("iris", "petal_length*1e999", "the scale of 'petal_length' must be a finite number other than 0, got inf"),
    ("iris", "petal_length+1e999", "the offset of 'petal_length' must be finite, got inf"),
])
def test_a_recalibration_of_what_is_not_a_numeric_feature_is_refused(name, text, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        parse_recalibration(text, dataset(name))


@pytest.mark.parametrize("drift, recalibrations, message", [
    ("recalibration", (), "--drift recalibration needs at least one --recalibrate COLUMN*SCALE[+OFFSET] (e.g. "
                          "sepal_length*1.6)"),
    ("covariate", (Recalibration("petal_length", 1.6),), "--recalibrate applies to --drift recalibration only, "
                                                          "not 'covariate'"),
    ("recalibration", (Recalibration("petal_length", 1.6), Recalibration("petal_length", 1.0, 0.1)),
     "'petal_length' is recalibrated twice"),
    ("recalibration", (Recalibration("sepal", 1.6),), "dataset 'iris' has no column 'sepal'"),
    ("recalibration", (Recalibration("petal_width", math.nan),), "the scale of 'petal_width' must be a finite"),
])
def test_a_recalibration_that_does_not_fit_the_drift_is_refused(drift, recalibrations, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        simulate(dataset("iris"), 10, drift, reference=reference("iris"), recalibrations=recalibrations)


def test_no_drift_and_zero_severity_change_nothing():
    clean = batch("wine", seed=11)
    for drift in ("covariate", "concept", "label_noise"):
        pd.testing.assert_frame_equal(batch("wine", drift, 0.0, seed=11), clean)


# ---- formats and reproducibility ---------------------------------------------------------------------------


def read_back(data: bytes, fmt: str, ds) -> pd.DataFrame:
    texts = {c: "str" for c in ds.columns if c == ds.label or not ds.feature(c).numeric}
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data), dtype=texts)
    if fmt == "jsonl":
        return pd.read_json(io.BytesIO(data), lines=True, dtype=texts)
    return pd.read_parquet(io.BytesIO(data))


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", ["cancer-mixed", "iris"])
def test_each_format_reads_back_as_written(name, fmt):
    ds = dataset(name, fmt)
    frame = batch(name, "covariate", 1.0, seed=12, rows=500)
    data = to_bytes(frame, fmt)
    read = read_back(data, fmt, ds)
    assert list(read.columns) == ds.columns and len(read) == len(frame)
    for column in ds.columns:
        if column != ds.label and ds.feature(column).numeric:
            np.testing.assert_allclose(read[column].to_numpy(float), frame[column].to_numpy(float), rtol=1e-9)
        else:
            assert read[column].isna().equals(frame[column].isna())
            assert (read[column].dropna() == frame[column].dropna()).all()
    validated = validate_batch(data, f"b{FORMATS[fmt]}", ds)
    assert validated.ok, validated.violations
    assert batch_name(500, "covariate", 1.0, 12, data, fmt).endswith(FORMATS[fmt])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_same_seed_same_bytes_other_seed_other_bytes(fmt):
    def data(seed):
        return to_bytes(simulate(dataset("cancer-mixed"), 800, "covariate", 0.5, seed, reference("cancer-mixed")), fmt)

    assert data(7) == data(7)
    assert data(7) != data(8)


def test_a_text_with_a_comma_is_quoted_in_csv():
    frame = pd.DataFrame({"size": [1.5, 2.0], "kind": ["a, b", 'say "c"']})
    assert pd.read_csv(io.BytesIO(to_bytes(frame, "csv"))).equals(frame)


@pytest.mark.parametrize("name", ["wine", "cancer-mixed"])
def test_a_reference_file_in_csv_or_parquet_gives_the_same_batch(name, tmp_path):
    ds = dataset(name)
    expected = batch(name, "covariate", 1.0, seed=13, rows=300)
    for suffix in (".csv", ".parquet"):
        path = datasets.write_reference(name, tmp_path / f"reference{suffix}")
        pd.testing.assert_frame_equal(simulate(ds, 300, "covariate", 1.0, 13, str(path)), expected)
    if name == "wine":
        pd.testing.assert_frame_equal(simulate(ds, 300, "covariate", 1.0, 13, "sklearn:wine"), expected)


# ---- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, "--rows must be between"),
    ({"rows": 10, "drift": "sideways"}, "--drift must be one of none, covariate, concept, label_noise"),
    ({"rows": 10, "drift": "concept", "severity": 1.5}, "--severity must be"),
    ({"rows": 10, "drift": "label_noise", "severity": 1.01}, "--severity must be"),
    ({"rows": 10, "drift": "covariate", "severity": -0.5}, "--severity must be"),
    ({"rows": 10, "severity": math.nan}, "--severity must be"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        simulate(dataset("iris"), **kwargs, reference=reference("iris"))


def _without(name, column):
    return datasets.reference_frame(name).drop(columns=[column])


def _with(name, column, row, value):
    frame = datasets.reference_frame(name)
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize("name, frame, message", [
    ("wine", lambda: _without("wine", "proline"), "lacks the dataset's column(s) 'proline'"),
    ("wine", lambda: _without("wine", "cultivar"), "lacks the dataset's column(s) 'cultivar'"),
    ("wine", lambda: _with("wine", "hue", 3, np.nan), "column 'hue' has 1 missing value(s) but the dataset does not "
                                                     "declare it nullable"),
    ("wine", lambda: _with("wine", "hue", 3, "bright"), "numeric column 'hue' holds non-numbers such as 'bright'"),
    ("wine", lambda: _with("wine", "cultivar", 3, "class_9"), "label(s) 'class_9' are not among the dataset's classes"),
    ("cancer-mixed", lambda: _with("cancer-mixed", "diagnosis", 3, np.nan), "the label column 'diagnosis' has 1 "
                                                                            "missing value(s)"),
    ("cancer-mixed", lambda: datasets.reference_frame("cancer-mixed").query("diagnosis == 'benign'"),
     "holds one class ('benign')"),
    ("wine", lambda: datasets.reference_frame("wine").head(0), "holds no rows"),
])
def test_a_reference_that_does_not_fit_the_dataset_is_refused(name, frame, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        prepare_reference(frame(), dataset(name), "ref.csv")


@pytest.mark.parametrize("spec, message", [
    ("sklearn:penguins", "--reference sklearn:penguins: no such bundled dataset; use sklearn:breast_cancer, "
                         "sklearn:digits, sklearn:iris, sklearn:wine"),  # what sklearn.datasets bundles
    ("sklearn:files", "--reference sklearn:files: no such bundled dataset"),  # load_files needs a folder
    ("/nonexistent/ref.csv", "--reference /nonexistent/ref.csv: the file does not exist"),
    ("ref.json", "not a .csv or .parquet file"),
    (None, "dataset 'cancer-mixed' needs --reference"),
])
def test_a_reference_that_cannot_be_had_is_refused(spec, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        load_reference(spec, dataset("cancer-mixed"))


def test_a_reference_file_that_is_not_what_its_name_says_is_refused(tmp_path):
    path = tmp_path / "ref.parquet"
    path.write_text("not,parquet\n1,2\n")
    with pytest.raises(PipelineError, match="--reference .*ref.parquet: cannot read it as PARQUET"):
        load_reference(str(path), dataset("wine"))


# ---- the stage ---------------------------------------------------------------------------------------------


def test_the_stage_lands_a_batch_and_a_success_marker_for_the_example_without_a_reference(volume):
    args = ("simulate", "--data-root", volume.root, "--dataset", datasets.EXAMPLE, "--partition", "2026-11-02",
            "--rows", 120, "--drift", "covariate", "--severity", "0.5", "--seed", 3)
    result = run_cli(*args).json
    landing = volume.root / "landing" / "iris-classifier" / "2026-11-02"
    name = result["path"].rsplit("/", 1)[1]
    assert sorted(p.name for p in landing.iterdir()) == sorted([name, "_SUCCESS"])
    assert name.startswith("batch-120r-covariate-0.5-s3-") and name.endswith(".csv")
    assert (result["rows"], result["format"], result["reference"]) == (120, "csv", "sklearn:iris")
    assert list(result["class_counts"]) == ["setosa", "versicolor", "virginica"]
    assert sum(result["class_counts"].values()) == 120
    assert result["bytes"] == (landing / name).stat().st_size
    assert run_cli(*args).json == result, "the same batch lands once: same name, same bytes"
    assert len(list(landing.iterdir())) == 2


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_stage_writes_the_dataset_source_format(tmp_path, fmt):
    text = datasets.dataset_path("cancer-mixed").read_text().replace("source: {format: jsonl}",
                                                                     f"source: {{format: {fmt}}}")
    assert f"format: {fmt}" in text
    reference_file = datasets.write_reference("cancer-mixed", tmp_path / "reference.parquet")
    result = run_cli("simulate", "--data-root", tmp_path / "volume", "--dataset-content", text, "--dataset-name",
                     "cancer-mixed", "--partition", "2026-11-03", "--rows", 300, "--seed", 4, "--drift", "concept",
                     "--severity", "0.2", "--reference", reference_file).json
    assert result["path"].endswith(FORMATS[fmt]) and result["format"] == fmt
    assert "/landing/cancer-mixed-classifier/2026-11-03/" in result["path"]
    assert list(result["class_counts"]) == ["benign", "malignant"], "the classes learned from the reference"
    data = open(result["path"], "rb").read()
    validated = validate_batch(data, result["path"], dataset("cancer-mixed", fmt))
    assert validated.ok, validated.violations
    assert len(validated.frame) == 300


def _bad_reference(tmp_path):
    path = tmp_path / "reference.csv"
    datasets.reference_frame("wine").drop(columns=["proline"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--drift", "sideways"], "--drift must be one of none, covariate, concept, label_noise, recalibration, got "
                              "'sideways'"),
    (["--drift", "concept", "--severity", "1.5"], "--severity must be >= 0 (and <= 1 for concept and label_noise"),
    (["--rows", "-5"], "--rows must be between 1 and 10,000,000, got -5"),
    (["--reference", "{bad}"], "lacks the dataset's column(s) 'proline'"),
    (["--reference", "{tmp}/nothing-here.csv"], "nothing-here.csv: the file does not exist"),
    (["--reference", "sklearn:penguins"], "no such bundled dataset"),
    (["--drift", "recalibration"], "--drift recalibration needs at least one --recalibrate COLUMN*SCALE[+OFFSET]"),
    (["--drift", "recalibration", "--recalibrate", "alcool*2"], "--recalibrate 'alcool*2': dataset 'wine' has no "
                                                                "column 'alcool'"),
    (["--recalibrate", "alcohol*2"], "--recalibrate applies to --drift recalibration only, not 'none'"),
])
def test_the_stage_refuses_bad_input_with_one_line_and_writes_nothing(tmp_path, extra, message):
    root = tmp_path / "volume"
    extra = [e.replace("{bad}", str(_bad_reference(tmp_path))).replace("{tmp}", str(tmp_path)) for e in extra]
    result = run_cli("simulate", "--data-root", root, "--dataset", datasets.dataset_path("wine"), "--partition",
                     "2026-11-02", *extra, check=False)
    assert result.returncode == 1 and message in result.error_line, result.stderr
    assert result.stdout == "" and not root.exists()


def test_the_stage_lands_a_recalibrated_batch(volume):
    result = run_cli("simulate", "--data-root", volume.root, "--dataset", datasets.EXAMPLE, "--partition",
                     "2026-11-03", "--rows", 200, "--seed", 3, "--drift", "recalibration", "--recalibrate",
                     "petal_length*1.6", "--recalibrate", "sepal_width+0.3").json
    assert result["recalibrated"] == ["petal_length*1.6", "sepal_width+0.3"]
    assert result["path"].rsplit("/", 1)[1].startswith("batch-200r-recalibration-1-s3-")
    expected = simulate(dataset("iris"), 200, "recalibration", seed=3, recalibrations=(
        Recalibration("petal_length", 1.6), Recalibration("sepal_width", 1.0, 0.3)))
    pd.testing.assert_frame_equal(read_back(open(result["path"], "rb").read(), "csv", dataset("iris")), expected)


def test_a_dataset_no_bundled_reference_fits_needs_one(tmp_path):
    root = tmp_path / "volume"
    result = run_cli("simulate", "--data-root", root, "--dataset", datasets.dataset_path("cancer-mixed"),
                     "--partition", "2026-11-02", check=False)
    assert result.returncode == 1 and "dataset 'cancer-mixed' needs --reference" in result.error_line
    assert not root.exists()
