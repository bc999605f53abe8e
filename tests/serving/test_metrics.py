"""Live-traffic metrics are counted in batches: a scrape must still see every request answered before it,
whether its batch was full or not, and a swap to other features must lose no count and break nothing."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlserving.metrics import TrafficMetrics

FEATURES = ("a", "b")
CLASSES = ("setosa", "versicolor", "virginica")


def observe(metrics: TrafficMetrics, version: str, rows: np.ndarray, labels: list, classes=CLASSES) -> None:
    """As the model answers: its predicted classes as positions in its classes."""
    metrics.observe(version, classes, rows, np.array([classes.index(label) for label in labels], dtype=np.intp))


@pytest.fixture
def traffic():
    registry = CollectorRegistry()
    metrics = TrafficMetrics("m", buckets=(1.0, 2.0))
    registry.register(metrics)
    metrics.use_features(FEATURES, version="1")
    return metrics, registry


def value(registry, name: str, **labels) -> float:
    return registry.get_sample_value(name, {"model": "m", **labels}) or 0.0


@pytest.mark.parametrize("requests", [1, 3, TrafficMetrics.FLUSH_ROWS // 2 - 1, TrafficMetrics.FLUSH_ROWS // 2,
                                      TrafficMetrics.FLUSH_ROWS + 3])  # two rows a request
def test_a_scrape_counts_every_request_before_it(traffic, requests):
    metrics, registry = traffic
    for i in range(requests):
        version = "1" if i % 3 else "2"
        observe(metrics, version, np.array([[0.5, 1.5], [1.5, 9.0]]), ["setosa", "virginica" if i % 2 else "setosa"])

    expected_v1 = sum(1 for i in range(requests) if i % 3)
    assert value(registry, "mlserving_feature_value_count", version="1", feature="a") == 2 * requests
    assert value(registry, "mlserving_feature_value_bucket", version="1", feature="a", le="1") == requests
    assert value(registry, "mlserving_feature_value_bucket", version="1", feature="b", le="2") == requests
    assert value(registry, "mlserving_feature_value_bucket", version="1", feature="b", le="+Inf") == 2 * requests
    assert value(registry, "mlserving_feature_value_sum", version="1", feature="b") == pytest.approx(10.5 * requests)
    by_class = {(v, c): value(registry, "mlserving_predicted_class_total", version=v, predicted_class=c)
                for v in ("1", "2") for c in ("setosa", "virginica")}
    assert sum(by_class.values()) == 2 * requests
    assert by_class["1", "setosa"] + by_class["1", "virginica"] == 2 * expected_v1
    assert by_class["1", "virginica"] == sum(1 for i in range(requests) if i % 3 and i % 2)


def test_scraping_twice_counts_nothing_twice(traffic):
    metrics, registry = traffic
    observe(metrics, "1", np.array([[0.5, 0.5]]), ["setosa"])
    generate_latest(registry)
    assert value(registry, "mlserving_predicted_class_total", version="1", predicted_class="setosa") == 1
    assert value(registry, "mlserving_feature_value_count", version="1", feature="a") == 1


def test_a_request_answered_with_the_old_features_after_a_swap_loses_only_its_values(traffic):
    metrics, registry = traffic
    observe(metrics, "1", np.array([[0.5, 0.5]]), ["setosa"])
    metrics.use_features(("a", "b", "c"), version="2")  # v2 has a third feature; a v1 request is still in flight
    observe(metrics, "1", np.array([[0.5, 0.5]]), ["versicolor"])
    observe(metrics, "2", np.array([[0.5, 1.5, 2.5]]), ["setosa"])

    assert value(registry, "mlserving_feature_value_count", version="2", feature="c") == 1  # afresh, under v2
    assert value(registry, "mlserving_feature_value_count", version="2", feature="a") == 1
    assert value(registry, "mlserving_feature_value_bucket", version="2", feature="b", le="1") == 0
    assert registry.get_sample_value("mlserving_feature_value_count", {"model": "m", "version": "1", "feature": "a"}) \
        is None  # v1's histograms are no longer exported
    for version, cls in (("1", "setosa"), ("1", "versicolor"), ("2", "setosa")):
        assert value(registry, "mlserving_predicted_class_total", version=version, predicted_class=cls) == 1


def test_a_new_version_starts_its_own_histograms_and_the_old_ones_stop(traffic):
    """The histograms carry the served version: a swap to another one, even with the same features and edges,
    starts its series from zero; the rows the old version served before the swap, still waiting in the
    batch, are counted under it (its series as a scrape before the swap saw them, then no longer exported)."""
    metrics, registry = traffic
    observe(metrics, "1", np.array([[0.5, 0.5], [1.5, 1.5]]), ["setosa", "setosa"])
    assert value(registry, "mlserving_feature_value_count", version="1", feature="a") == 2  # scraped: flushed
    observe(metrics, "1", np.array([[0.5, 9.0]]), ["setosa"])  # waiting in the batch at the swap
    counted_before_swap = []
    original = metrics._count_features

    def restart(*args):  # what the old version's histograms hold when they are dropped
        counted_before_swap.append(metrics.counts.copy())
        original(*args)

    metrics._count_features = restart
    metrics.use_features(FEATURES, version="2")
    assert counted_before_swap[0].tolist() == [2, 1, 0, 1, 1, 1]  # a: 0.5, 1.5, 0.5; b: 0.5, 1.5, 9.0
    observe(metrics, "2", np.array([[1.5, 0.5]]), ["virginica"])
    exported = {sample.labels["version"] for family in registry.collect() if family.name == "mlserving_feature_value"
                for sample in family.samples}
    assert exported == {"2"}  # v1's histograms: no longer exported
    assert value(registry, "mlserving_feature_value_count", version="2", feature="a") == 1  # from zero
    assert value(registry, "mlserving_feature_value_bucket", version="2", feature="a", le="1") == 0
    assert value(registry, "mlserving_feature_value_bucket", version="2", feature="b", le="1") == 1
    assert value(registry, "mlserving_predicted_class_total", version="1", predicted_class="setosa") == 3


def test_two_models_under_one_version_name_count_their_own_classes(traffic):
    """An unregistered folder reloaded with another model keeps the version name "unregistered": each
    request's positions are counted against the classes of the model that answered it."""
    metrics, registry = traffic
    observe(metrics, "unregistered", np.array([[0.5, 0.5]]), ["versicolor"])
    observe(metrics, "unregistered", np.array([[0.5, 0.5], [0.5, 0.5]]), ["no", "yes"], classes=("no", "yes"))
    observe(metrics, "unregistered", np.array([[0.5, 0.5]]), ["virginica"])
    counted = {cls: value(registry, "mlserving_predicted_class_total", version="unregistered", predicted_class=cls)
               for cls in (*CLASSES, "no", "yes")}
    assert counted == {"setosa": 0, "versicolor": 1, "virginica": 1, "no": 1, "yes": 1}


def test_the_exposed_names_are_the_ones_dashboards_query(traffic):
    metrics, registry = traffic
    observe(metrics, "1", np.array([[0.5, 0.5]]), ["setosa"])
    text = generate_latest(registry).decode()
    assert '# TYPE mlserving_predicted_class_total counter' in text  # as prometheus_client's Counter wrote it
    assert 'mlserving_predicted_class_total{model="m",predicted_class="setosa",version="1"} 1.0' in text
    assert '# TYPE mlserving_feature_value histogram' in text
    assert 'mlserving_feature_value_bucket{feature="a",le="1",model="m",version="1"} 1.0' in text


def test_a_request_larger_than_a_batch_is_counted_whole(traffic):
    metrics, registry = traffic
    observe(metrics, "1", np.array([[0.5, 0.5]]), ["setosa"])
    big = TrafficMetrics.FLUSH_ROWS * 3
    observe(metrics, "1", np.full((big, 2), 1.5), ["virginica"] * big)
    observe(metrics, "2", np.array([[0.5, 0.5]]), ["setosa"])
    assert value(registry, "mlserving_feature_value_count", version="1", feature="a") == big + 2
    assert value(registry, "mlserving_feature_value_bucket", version="1", feature="a", le="1") == 2
    assert value(registry, "mlserving_predicted_class_total", version="1", predicted_class="virginica") == big
    assert value(registry, "mlserving_predicted_class_total", version="2", predicted_class="setosa") == 1


def test_waiting_requests_leave_nothing_for_the_garbage_collector(traffic):
    """A request that left a tuple or a list waiting would count towards the collector's thresholds, and
    its collections (the oldest generation's take over 100 ms in the model server) would reach the tail."""
    metrics, _ = traffic
    rows, positions = np.array([[0.5, 0.5]]), np.array([0], dtype=np.intp)
    gc.collect()
    gc.disable()
    try:
        allocated_before = gc.get_count()[0]
        for _ in range(TrafficMetrics.FLUSH_ROWS - 1):
            metrics.observe("1", CLASSES, rows, positions)
        allocated = gc.get_count()[0] - allocated_before
    finally:
        gc.enable()
    assert allocated < 10, f"{allocated} tracked objects left by {TrafficMetrics.FLUSH_ROWS - 1} requests"


CATEGORICAL = (("island", ("Biscoe", "Dream")), ("sex", ("female", "male", "__missing__")))


@pytest.fixture
def mixed_traffic():
    registry = CollectorRegistry()
    metrics = TrafficMetrics("m", buckets=(1.0, 2.0))
    registry.register(metrics)
    metrics.use_features(("mass",), CATEGORICAL, version="1")
    return metrics, registry


def observe_mixed(metrics, rows: list[tuple], version: str = "1") -> None:
    """Rows of (mass, island, sex), all predicted setosa."""
    numeric = np.array([[np.nan if r[0] is None else r[0]] for r in rows])
    columns = tuple(np.array([r[i] for r in rows], dtype=object) for i in (1, 2))
    metrics.observe(version, CLASSES, numeric, np.zeros(len(rows), dtype=np.intp), columns)


def categories(registry, feature: str) -> dict[str, float]:
    return {sample.labels["category"]: sample.value for metric in registry.collect()
            if metric.name == "mlserving_feature_category" for sample in metric.samples
            if sample.labels["feature"] == feature}


def test_categorical_values_count_under_the_models_categories_other_or_missing(mixed_traffic):
    metrics, registry = mixed_traffic
    observe_mixed(metrics, [(0.5, "Biscoe", "male"), (1.5, "Atlantis", None), (None, None, "__missing__"),
                            (3.0, "Lemuria", "Female")])
    assert categories(registry, "island") == {"Biscoe": 1, "Dream": 0, "__other__": 2, "__missing__": 1}
    # the pipeline's fill value for a missing category is the missing bucket, not a second label
    assert categories(registry, "sex") == {"female": 0, "male": 1, "__other__": 1, "__missing__": 2}
    # the missing one is not binned
    assert value(registry, "mlserving_feature_value_count", version="1", feature="mass") == 3
    assert value(registry, "mlserving_feature_value_sum", version="1", feature="mass") == 5.0
    assert value(registry, "mlserving_feature_value_bucket", version="1", feature="mass", le="+Inf") == 3
    assert value(registry, "mlserving_feature_missing_total", feature="mass") == 1


def test_no_value_a_client_sends_adds_a_label(mixed_traffic):
    metrics, registry = mixed_traffic
    for i in range(3 * TrafficMetrics.FLUSH_ROWS):
        observe_mixed(metrics, [(1.0, f"island-{i}", f"sex-{i}")])
    assert categories(registry, "island") == {"Biscoe": 0, "Dream": 0, "__other__": 3 * TrafficMetrics.FLUSH_ROWS,
                                              "__missing__": 0}
    text = generate_latest(registry).decode()
    assert "# TYPE mlserving_feature_category_total counter" in text
    assert 'mlserving_feature_category_total{category="__other__",feature="island",model="m"} 3072.0' in text


def test_a_large_mixed_request_is_counted_whole(mixed_traffic):
    metrics, registry = mixed_traffic
    big = TrafficMetrics.FLUSH_ROWS * 2 + 1
    observe_mixed(metrics, [(0.5, "Dream", None)] * big)
    assert categories(registry, "island")["Dream"] == big and categories(registry, "sex")["__missing__"] == big
    assert value(registry, "mlserving_feature_value_bucket", version="1", feature="mass", le="1") == big


def test_a_swap_to_other_categories_starts_their_counts_afresh_and_loses_nothing_else(mixed_traffic):
    metrics, registry = mixed_traffic
    observe_mixed(metrics, [(0.5, "Dream", "male")])
    # the same version name (an unregistered folder reloaded) with other categories
    metrics.use_features(("mass",), (("island", ("Dream", "Torgersen")), CATEGORICAL[1]), version="1")
    observe_mixed(metrics, [(0.5, "Torgersen", "male")], version="2")
    assert categories(registry, "island") == {"Dream": 0, "Torgersen": 1, "__other__": 0, "__missing__": 0}
    assert categories(registry, "sex")["male"] == 1  # a new categorical set: every count afresh, as histograms
    # the same version and numeric set: kept
    assert value(registry, "mlserving_feature_value_count", version="1", feature="mass") == 2
    metrics.use_features(("a", "b"), version="3")  # to an all-numeric model; a mixed request still in flight
    observe_mixed(metrics, [(0.5, "Dream", "male")])
    observe(metrics, "3", np.array([[0.5, 0.5]]), ["setosa"])
    assert categories(registry, "island") == {}
    assert value(registry, "mlserving_feature_value_count", version="3", feature="a") == 1
    assert value(registry, "mlserving_predicted_class_total", version="1", predicted_class="setosa") == 2


def test_a_model_with_very_many_categories_counts_the_first_ones_by_name():
    from mlserving.metrics import MAX_CATEGORY_LABELS

    registry = CollectorRegistry()
    metrics = TrafficMetrics("m")
    registry.register(metrics)
    metrics.use_features((), (("id", tuple(f"c{i}" for i in range(MAX_CATEGORY_LABELS + 50))),))
    metrics.observe("1", CLASSES, np.empty((2, 0)), np.zeros(2, dtype=np.intp),
                    (np.array(["c0", f"c{MAX_CATEGORY_LABELS + 10}"], dtype=object),))
    counted = categories(registry, "id")
    assert len(counted) == MAX_CATEGORY_LABELS + 2 and counted["c0"] == 1 and counted["__other__"] == 1


PREDICTION_EDGES = (100.0, 150.0, 200.0)


@pytest.fixture
def regression_traffic():
    registry = CollectorRegistry()
    metrics = TrafficMetrics("m", buckets=(1.0, 2.0))
    registry.register(metrics)
    metrics.use_features(FEATURES, version="r1", regression=True, prediction_edges=PREDICTION_EDGES)
    return metrics, registry


def predict(metrics: TrafficMetrics, version: str, predictions: list[float]) -> None:
    """As a regressor answers: its predicted numbers, no classes."""
    metrics.observe(version, None, np.full((len(predictions), 2), 0.5), np.asarray(predictions, dtype=np.float64))


def prediction_buckets(registry, version: str = "r1") -> dict[str, float]:
    return {sample.labels["le"]: sample.value for family in registry.collect() if family.name == "mlserving_prediction"
            for sample in family.samples if sample.name == "mlserving_prediction_bucket"
            and sample.labels["version"] == version}


@pytest.mark.parametrize("requests", [1, TrafficMetrics.FLUSH_ROWS // 3 + 1])  # three rows a request
def test_a_regressors_predictions_are_counted_in_a_histogram_on_its_edges(regression_traffic, requests):
    metrics, registry = regression_traffic
    for _ in range(requests):
        predict(metrics, "r1", [99.5, 150.0, 1e6])  # 150.0 on an edge: in its bucket (le: value <= edge)
    assert prediction_buckets(registry) == {"100": requests, "150": 2 * requests, "200": 2 * requests,
                                            "+Inf": 3 * requests}
    assert value(registry, "mlserving_prediction_count", version="r1") == 3 * requests
    assert value(registry, "mlserving_prediction_sum", version="r1") == pytest.approx((99.5 + 150 + 1e6) * requests)
    assert value(registry, "mlserving_feature_value_count", version="r1", feature="a") == 3 * requests  # as ever


def test_a_regressor_exports_no_predicted_class_counter(regression_traffic):
    metrics, registry = regression_traffic
    predict(metrics, "r1", [120.0])
    text = generate_latest(registry).decode()
    assert "mlserving_predicted_class" not in text
    assert "# TYPE mlserving_prediction histogram" in text
    assert 'mlserving_prediction_bucket{le="150",model="m",version="r1"} 1.0' in text
    assert 'mlserving_prediction_count{model="m",version="r1"} 1.0' in text


def test_a_request_larger_than_a_batch_counts_every_prediction(regression_traffic):
    metrics, registry = regression_traffic
    big = TrafficMetrics.FLUSH_ROWS * 2 + 5
    predict(metrics, "r1", [120.0])
    predict(metrics, "r1", np.linspace(0, 300, big).tolist())
    expected = np.searchsorted(PREDICTION_EDGES, np.r_[120.0, np.linspace(0, 300, big)], side="left")
    assert list(prediction_buckets(registry).values()) == np.cumsum(np.bincount(expected, minlength=4)).tolist()


def test_a_regressor_without_edges_exports_no_prediction_histogram():
    registry = CollectorRegistry()
    metrics = TrafficMetrics("m")
    registry.register(metrics)
    metrics.use_features(FEATURES, version="r1", regression=True, prediction_edges=None)
    predict(metrics, "r1", [120.0, 130.0])
    names = {family.name for family in registry.collect()}
    assert "mlserving_prediction" not in names and "mlserving_predicted_class" not in names
    assert value(registry, "mlserving_feature_value_count", version="r1", feature="b") == 2


def test_swaps_between_a_classifier_and_regressors_count_each_answer_as_its_model_made_it(regression_traffic):
    """Predictions waiting in the batch at a swap are counted under the version that made them; one made by
    the swapped-out version after the swap (a request in flight) is not counted in the new version's histogram.
    A classifier's class counts are exported while a classifier is served."""
    metrics, registry = regression_traffic
    predict(metrics, "r1", [120.0])  # waiting at the swap
    counted_at_swap = []
    original = metrics._count_predictions

    def restart(edges):
        counted_at_swap.append(metrics.prediction_counts.tolist())
        original(edges)

    metrics._count_predictions = restart
    metrics.use_features(FEATURES, version="r2", regression=True, prediction_edges=(0.0, 500.0))
    assert counted_at_swap == [[0, 1, 0, 0]]  # r1's prediction, in r1's histogram, before it was dropped
    predict(metrics, "r1", [120.0])  # answered by r1, in flight at the swap
    predict(metrics, "r2", [250.0])
    assert prediction_buckets(registry, "r1") == {}
    assert prediction_buckets(registry, "r2") == {"0": 0, "500": 1, "+Inf": 1}

    metrics.use_features(FEATURES, version="1")  # to a classifier
    predict(metrics, "r2", [250.0])  # a regressor's answer in flight: no histogram to count it in
    observe(metrics, "1", np.array([[0.5, 0.5]]), ["setosa"])
    names = {family.name for family in registry.collect()}
    assert "mlserving_prediction" not in names
    assert value(registry, "mlserving_predicted_class_total", version="1", predicted_class="setosa") == 1

    metrics.use_features(FEATURES, version="r2", regression=True, prediction_edges=(0.0, 500.0))  # back: afresh
    predict(metrics, "r2", [600.0])
    assert prediction_buckets(registry, "r2") == {"0": 0, "500": 0, "+Inf": 1}
    assert "mlserving_predicted_class" not in {family.name for family in registry.collect()}


def test_a_regressors_waiting_predictions_leave_nothing_for_the_garbage_collector(regression_traffic):
    metrics, _ = regression_traffic
    rows, predictions = np.array([[0.5, 0.5]]), np.array([120.0])
    gc.collect()
    gc.disable()
    try:
        allocated_before = gc.get_count()[0]
        for _ in range(TrafficMetrics.FLUSH_ROWS - 1):
            metrics.observe("r1", None, rows, predictions)
        allocated = gc.get_count()[0] - allocated_before
    finally:
        gc.enable()
    assert allocated < 10, f"{allocated} tracked objects left by {TrafficMetrics.FLUSH_ROWS - 1} requests"
