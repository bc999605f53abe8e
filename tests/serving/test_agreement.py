"""The v2 fast path answers as KServe's own route does, request for request.

Two `mlserving` processes serve the same model directory on real ports, one as users start it (the fast path
on) and one with --disable-fast-path (every request through KServe's route: its FastAPI body parsing, pydantic
models, DataPlane, Model.__call__ and exception handlers). Requests are drawn with hypothesis from the Open
Inference Protocol's request schema and from each served model's own metadata (its inputs' names and
datatypes), valid and invalid: wrong datatypes, shapes that do or do not match the data, missing fields,
unknown models and inputs, extra fields, parameters (binary_data_output among them), requested outputs,
BYTES inputs, binary-extension bodies (KServe's own client encoding them) with their
Inference-Header-Content-Length right or wrong, content types, CloudEvents headers, malformed JSON and bodies
over the size limit. Each goes to both servers, and both must give the same status, the same body (JSON
compared parsed), the same content type with a Content-Length that is the body's, the same
Inference-Header-Content-Length (a binary answer's JSON header, then the same bytes), and move /metrics the same
way (every sample of the registry, read before and after each request; latency histograms by their counts).

The one normalisation: the `id` of an answer to a request without one. KServe's route and the fast path both
make a fresh random UUID (RegistryModel.new_request_id), so two answers cannot carry the same one; each must be
a version-4 UUID, and is then compared as "<generated>".

The same requests also go, in-process, through our middleware stack (routes.in_front) in front of a stand-in
for KServe's route that records what reaches it: the test fails if the fast path answered too few of them for
the comparison to have tested it.
"""

from __future__ import annotations

import json
import re
import string
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from .conftest import MODEL, REPOSITORY_TOKEN, LiveServer, point
from .test_binary import asgi_post
from .test_fuzz import oip_requests

# The served models the requests are drawn for: all-numeric (the linear fold), categorical with missing values,
# and a regressor (FP64 answers).
FOLDERS = ("good-v1", "mixed", "regression-ridge")
EXAMPLES = 170  # per model: with the fixed draws below, about 510 requests compared in ~30 s on 2 cores
MAX_ROWS = 64  # both servers' --max-batch-rows: a body over the size limit is then ~100 KB, cheap to send
DEPLOYER = {"Authorization": f"Bearer {REPOSITORY_TOKEN}"}
# Samples that move by themselves or by time, not by a request: the process's own, and the latency
# histograms' sums and buckets (their counts are compared)
VOLATILE = ("process_", "python_", "mlserving_gc_pause")
TIMED = ("request_preprocess_seconds", "request_predict_seconds", "request_postprocess_seconds",
         "request_explain_seconds")

# Fixed draws (derandomize, no database), and no shrinking: a disagreement is reported with the request as drawn
# (shrinking one takes minutes of requests to two servers).
AGREE = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                 phases=[Phase.explicit, Phase.generate],
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                        HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def servers(model_dirs, tmp_path_factory):
    """(fast, kserve): the two servers' URLs, serving the link `link` points at, and the link."""
    folder = tmp_path_factory.mktemp("agreement")
    link = folder / "current"
    point(link, model_dirs / FOLDERS[0])
    common = ("--max-batch-rows", str(MAX_ROWS))
    with ThreadPoolExecutor(2) as pool:  # each takes seconds to import KServe: start them side by side
        fast, kserve = pool.map(lambda args: LiveServer(link, folder / f"{args[0]}.log", *common, *args[1:]),
                                [("fast",), ("kserve", "--disable-fast-path")])
    yield fast, kserve, link
    for server in (fast, kserve):
        server.stop()


def serve(servers, model_dirs, folder: str) -> None:
    """Both servers swapped to `folder`, through KServe's repository endpoint, as the local deploy does."""
    fast, kserve, link = servers
    point(link, model_dirs / folder)
    for server in (fast, kserve):
        answer = httpx.post(f"{server.url}/v2/repository/models/{MODEL}/load", headers=DEPLOYER, timeout=60)
        assert answer.status_code == 200, answer.text


# ---- requests -------------------------------------------------------------------------------------------------

WORDS = st.sampled_from(["Torgersen", "Biscoe", "Dream", "Atlantis", "male", "female", "", "ünï", "x" * 300])
NUMBERS = st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-1000, 1000)
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.just(float("inf")),
                       st.integers(2**63, 2**64 - 1), st.lists(st.integers(), max_size=2))
DATATYPES = st.sampled_from(["FP64", "FP32", "FP16", "fp64", "INT64", "BOOL", "BYTES", "", "UINT8"])
CONTENT_TYPES = st.sampled_from(["application/json"] * 24 + ["application/json; charset=utf-8",
                                                              "application/cloudevents+json", "text/plain", None])
CLOUDEVENT = {"ce-specversion": "1.0", "ce-source": "agreement", "ce-type": "infer", "ce-id": "e-1"}


@st.composite
def column(draw, datatype: str, rows: int, nullable: bool) -> list:
    """A feature's values: numbers (null where the feature may miss one) or strings, now and then an odd one."""
    values = WORDS if datatype == "BYTES" else NUMBERS
    if nullable or draw(st.integers(0, 29)) == 0:
        values = values | st.none()
    data = draw(st.lists(values, min_size=rows, max_size=rows))
    if data and draw(st.integers(0, 39)) == 0:
        data[draw(st.integers(0, rows - 1))] = draw(ODD_VALUES | WORDS | NUMBERS)
    return data


@st.composite
def tensors(draw, inputs: list[dict], nullable: set[str]) -> tuple[list[dict], int]:
    """The model's inputs as one tensor per feature (or one [N, F] matrix when all are numeric), then maybe one
    thing wrong with them: datatype, shape, a field, a feature missing or unknown, values nested or not a list."""
    rows = draw(st.integers(1, 4) | st.integers(0, 4))
    numeric = all(i["datatype"] != "BYTES" for i in inputs)
    if numeric and draw(st.booleans()):
        data = draw(st.lists(st.lists(NUMBERS, min_size=len(inputs), max_size=len(inputs)), min_size=rows,
                             max_size=rows))
        name = draw(st.sampled_from(["features", "features", "x", inputs[0]["name"]]))
        tensors_ = [{"name": name, "shape": [rows, len(inputs)],
                     "datatype": draw(st.sampled_from(["FP64", "FP32"])),
                     "data": data if draw(st.booleans()) else [v for row in data for v in row]}]
    else:
        tensors_ = [{"name": i["name"], "shape": [rows], "datatype": i["datatype"],
                     "data": draw(column(i["datatype"], rows, i["name"] in nullable))} for i in inputs]
    tensor = draw(st.sampled_from(tensors_))
    change = draw(st.integers(0, 34))  # one change in four
    if change == 0:
        tensor["datatype"] = draw(DATATYPES)
    elif change == 1:
        tensor["shape"] = draw(st.lists(st.integers(-1, 6), max_size=3))
    elif change == 2:
        tensor["shape"] = [draw(st.sampled_from([True, 2.0, "3", None, 2**63])), *tensor["shape"][1:]]
    elif change == 3:
        del tensor[draw(st.sampled_from(["name", "shape", "datatype", "data"]))]
    elif change == 4 and len(tensors_) > 1:
        tensors_.remove(tensor)
    elif change == 5:
        tensors_.append({**tensor, "name": "colour"})
    elif change == 6:
        tensor["data"] = draw(st.sampled_from([{"a": 1}, "1,2,3", 7, None, [[1, 2], [3]]]))
    elif change == 7:
        tensor["parameters"] = draw(st.sampled_from([{"content_type": "str"}, {"x": [1]}, [], "p", {"n": None}]))
    elif change == 8:
        tensor["extra"] = "ignored"
    return tensors_, rows


@st.composite
def envelope(draw, body: dict) -> tuple[dict, str | None]:
    """The request around its inputs: an id (or not, or not a string), parameters, requested outputs, extra
    fields; and the id an answer should echo (None: a generated one)."""
    kind = draw(st.sampled_from([None, None, "text", "text", "text", "", 7]))  # an id, or none, or not a string
    request_id = draw(st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12)) \
        if kind == "text" else kind
    if request_id is not None or draw(st.booleans()):
        body["id"] = request_id
    if draw(st.integers(0, 5)) == 0:
        body["parameters"] = draw(st.sampled_from([{"binary_data_output": True}, {"binary_data_output": False},
                                                   {"priority": 1, "tag": "a", "w": 0.5}, {"n": None},
                                                   {"nested": {"a": 1}}, [1], "p"]))
    if draw(st.integers(0, 7)) == 0:
        body["outputs"] = draw(st.sampled_from([[], [{"name": "predictions"}], [{"name": "nope"}],
                                                [{"name": "predictions", "parameters": {"binary_data": True}}],
                                                [{"parameters": {}}], "predictions", [{"name": 3}]]))
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.sampled_from(["model_name", "inputz", "extra"]))] = draw(ODD_VALUES | WORDS)
    return body, request_id if type(request_id) is str and request_id else None


def binary_body(tensors_: list[dict], request_id, body: dict) -> tuple[bytes, dict] | None:
    """The request in the binary tensor data extension as KServe's own client encodes it (InferRequest.to_rest),
    or None when its client cannot encode these tensors."""
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    encoded = []
    for tensor in tensors_:
        try:
            if tensor["datatype"] == "BYTES":
                values = np.array(tensor["data"], dtype=object)
                assert all(type(v) is str for v in values.ravel())
            else:
                with np.errstate(all="ignore"):  # a number beyond FP16's range is sent as inf, as numpy casts it
                    values = np.array(tensor["data"], dtype={"FP16": np.float16, "FP32": np.float32}.get(
                        tensor["datatype"], np.float64))
            values = values.reshape(tensor["shape"])
            infer_input = InferInput(name=tensor["name"], shape=list(values.shape), datatype=tensor["datatype"])
            infer_input.set_data_from_numpy(values, binary_data=True)
        except Exception:  # noqa: BLE001 - whatever KServe's client or numpy refuses is not sent this way
            return None
        encoded.append(infer_input)
    outputs = body.get("outputs")
    requested = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in outputs] \
        if isinstance(outputs, list) and all(isinstance(o, dict) and "name" in o for o in outputs) else None
    content, json_length = InferRequest(model_name=MODEL, infer_inputs=encoded,
                                        request_id=request_id if isinstance(request_id, str) else None,
                                        parameters=body.get("parameters") if isinstance(body.get("parameters"), dict)
                                        else None, request_outputs=requested).to_rest()
    if json_length is None:
        return None
    return content, {"inference-header-content-length": str(json_length)}


@st.composite
def corrupt(draw, content: bytes, headers: dict) -> tuple[bytes, dict]:
    """A binary body with its framing right, or one thing wrong with it."""
    length = int(headers["inference-header-content-length"])
    change = draw(st.integers(0, 7))
    if change == 0:
        return content[:-draw(st.integers(1, 8))], headers
    if change == 1:
        return content + b"\0" * draw(st.integers(1, 8)), headers
    if change == 2:
        value = draw(st.sampled_from(["lots", "-3", "0", str(len(content) + 1), str(length - 2), "+12", "0x10", ""]))
        return content, {**headers, "inference-header-content-length": value}
    if change == 3:
        header = json.loads(content[:length])
        header["inputs"][0].setdefault("parameters", {})["binary_data_size"] = draw(
            st.sampled_from([-8, 3, 2.0, None, "8", 10**6]))
        text = json.dumps(header).encode()
        return text + content[length:], {**headers, "inference-header-content-length": str(len(text))}
    if change == 4:
        header = json.loads(content[:length])
        header["inputs"][0]["shape"] = draw(st.sampled_from([[-1], [99], [2.0], "3", None, [True]]))
        text = json.dumps(header).encode()
        return text + content[length:], {**headers, "inference-header-content-length": str(len(text))}
    return content, headers


@st.composite
def requests(draw, inputs: list[dict], nullable: set[str]) -> dict:
    """One request: path, body, headers, and the id its answer should carry (None: a generated one)."""
    tensors_, rows = draw(tensors(inputs, nullable))
    body, request_id = draw(envelope({"inputs": tensors_}))
    path = f"/v2/models/{draw(st.sampled_from([MODEL] * 14 + ['tulip']))}/infer"
    form = draw(st.integers(0, 14))
    headers: dict[str, str] = {}
    if form <= 2:  # binary
        encoded = binary_body(tensors_, request_id, body)
        if encoded is None:
            form = 3
        else:
            content, headers = draw(corrupt(*encoded))
            headers["content-type"] = draw(st.sampled_from(["application/octet-stream"] * 4
                                                            + [None, "application/json"]))
    if form >= 3:
        content = json.dumps(body).encode()  # NaN and Infinity as JSON has none (Python writes them)
        headers["content-type"] = draw(CONTENT_TYPES)
    if form == 14:
        content = draw(st.sampled_from([b"", b"{", b'{"inputs": [', b"[1, 2]", b"null", content[:-1],
                                        b"\xef\xbb\xbf" + content, content.decode().encode("utf-16"),
                                        content + b" " * (1 << 20)]))
    if draw(st.integers(0, 19)) == 0:
        headers.update(CLOUDEVENT)
    if draw(st.integers(0, 3)) == 0:
        headers["x-request-id"] = "trace-7"
    return {"path": path, "content": content, "headers": {k: v for k, v in headers.items() if v is not None},
            "id": request_id}


@st.composite
def schema_requests(draw) -> dict:
    """A request straight from the OIP schema's inference_request (test_fuzz.from_schema), as JSON."""
    body = draw(oip_requests())
    request_id = body.get("id")
    return {"path": f"/v2/models/{MODEL}/infer", "content": json.dumps(body).encode(),
            "headers": {"content-type": "application/json"},
            "id": request_id if type(request_id) is str and request_id else None}


# ---- comparing ------------------------------------------------------------------------------------------------

def metric_samples(client: httpx.Client) -> dict[tuple, float]:
    """Every sample /metrics shows that a request can move, by name and labels."""
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            name = sample.name
            if name.startswith(VOLATILE) or name.endswith("_created") or \
                    (name.startswith(TIMED) and not name.endswith("_count")):
                continue
            samples[name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def moved(before: dict, after: dict) -> dict:
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}


def answer(response: httpx.Response, request_id: str | None) -> dict:
    """What of an answer both paths must agree on, its generated id normalised (the module's docstring)."""
    content = response.content
    # A Content-Length is the body's (KServe's binary answers come chunked, without one: both the same way)
    length = response.headers.get("content-length")
    assert length is None or length == str(len(content)), response.headers
    header_length = response.headers.get("inference-header-content-length")
    json_part, tail = (content[:int(header_length)], content[int(header_length):]) if header_length else (content, b"")
    try:
        document = json.loads(json_part)
    except ValueError:
        try:  # a binary answer as a binary CloudEvent's data comes without the header: its JSON, then its bytes
            document, end = json.JSONDecoder().raw_decode(json_part.decode("latin-1"))
            json_part, tail = json_part[:end], json_part[end:] + tail  # latin-1: one character a byte
        except ValueError:
            document = json_part
    if response.status_code == 200:
        document = normalised(document, request_id)
    return {"status": response.status_code, "content-type": response.headers.get("content-type"),
            "content-length": length is not None,
            "inference-header-content-length": header_length is not None, "document": document, "tail": tail}


def normalised(document, request_id: str | None):
    """An answer with what is fresh in every answer replaced: the generated id of an answer to a request
    without one, and a CloudEvent's own id and time (KServe answers a CloudEvent with a new event:
    kserve.utils.utils.create_response_cloudevent, whose attributes the cloudevents SDK generates), whose data
    is the answer."""
    if not isinstance(document, dict):
        return document
    if "specversion" in document:
        event = {**document, "id": "<event id>", "time": "<event time>" if "time" in document else None}
        if isinstance(event.get("data"), dict):
            event["data"] = normalised(event["data"], request_id)
        return event
    if request_id is None and "id" in document:
        assert uuid.UUID(document["id"]).version == 4 and str(uuid.UUID(document["id"])) == document["id"]
        document = {**document, "id": "<generated>"}
    return document


class Comparison:
    """Sends each request to both servers and compares; counts what it compared and who answered."""

    def __init__(self, fast_url: str, kserve_url: str):
        self.fast, self.kserve = httpx.Client(base_url=fast_url, timeout=30), httpx.Client(base_url=kserve_url,
                                                                                           timeout=30)
        self.compared, self.statuses = 0, {}

    def __call__(self, request: dict) -> None:
        before = [metric_samples(c) for c in (self.fast, self.kserve)]
        responses = [c.post(request["path"], content=request["content"], headers=request["headers"])
                     for c in (self.fast, self.kserve)]
        after = [metric_samples(c) for c in (self.fast, self.kserve)]
        fast, kserve = (answer(r, request["id"]) for r in responses)
        shown = {k: v for k, v in request.items() if k != "content"} | {"content": request["content"][:300]}
        assert fast == kserve, shown
        assert moved(before[0], after[0]) == moved(before[1], after[1]), shown
        self.compared += 1
        self.statuses[fast["status"]] = self.statuses.get(fast["status"], 0) + 1

    def close(self) -> None:
        self.fast.close()
        self.kserve.close()


class StandIn:
    """A stand-in for KServe's route behind routes.in_front, recording which requests reach it."""

    def __init__(self):
        self.reached = 0

    async def __call__(self, scope, receive, send):
        self.reached += 1
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.timeout(300)  # ~50 s with the servers' start on 2 cores; room for a loaded machine
def test_the_fast_path_answers_as_kserves_route(servers, served, model_dirs, record_property):
    from mlserving.routes import in_front

    fast, kserve, _ = servers
    _, in_process = served
    compare, stand_in = Comparison(fast.url, kserve.url), StandIn()
    through_ours = in_front(stand_in, {MODEL: in_process})
    answered_fast = answered_ok = offered = 0
    started = time.monotonic()
    try:
        for folder in FOLDERS:
            serve(servers, model_dirs, folder)
            in_process.swap(model_dirs / folder)
            metadata = compare.fast.get(f"/v2/models/{MODEL}").json()

            @AGREE
            @given(requests(metadata["inputs"], set(metadata["parameters"]["nullable_inputs"])))
            def agree(request):
                nonlocal answered_fast, answered_ok, offered
                compare(request)
                if request["path"] == f"/v2/models/{MODEL}/infer":
                    reached = stand_in.reached
                    with np.errstate(all="ignore"):  # the values a request may hold: inf - inf, ...
                        status, _ = asgi_post(through_ours, request["content"], request["headers"])
                    offered += 1
                    answered_fast += stand_in.reached == reached
                    answered_ok += stand_in.reached == reached and status == 200

            agree()

        @settings(AGREE, max_examples=EXAMPLES // 2)
        @given(schema_requests())
        def agree_on_schema_requests(request):
            compare(request)

        agree_on_schema_requests()
    finally:
        compare.close()
        in_process.swap(model_dirs / "good-v1")
    seconds = time.monotonic() - started
    record_property("requests_compared", compare.compared)
    record_property("agreement_seconds", round(seconds, 1))
    record_property("agreement_summary", f"statuses {sorted(compare.statuses.items())}; of {offered} requests "
                                         f"for the served model, {answered_fast} were answered in front of KServe's "
                                         f"route, {answered_ok} of them predictions by the fast path")
    # Not a vacuous agreement: most predictions came from the fast path, and both kinds of answer were seen
    assert answered_ok >= compare.statuses.get(200, 0) // 2, (answered_ok, compare.statuses)
    assert compare.statuses.get(200, 0) >= compare.compared // 6 and \
        sum(n for status, n in compare.statuses.items() if 400 <= status < 500) >= compare.compared // 10


def test_both_servers_say_which_path_serves_and_write_kserves_lines_for_every_answer(servers, model_dirs):
    """Each server says at its start whether its fast path is on (--disable-fast-path turns it off), and for a
    request on either path writes what KServe writes: its timing middleware's two lines (wall and CPU time,
    always on) and, as --enable_latency_logging is on by default, its latency line naming the x-request-id."""
    from .test_endpoints import matrix_request

    serve(servers, model_dirs, "good-v1")
    fast, kserve, _ = servers
    timing = re.compile(r"kserve\.io\.\S*infer: ")  # KServe's PrintTimings: "kserve.io.<route or path>: ..."
    for server, state in ((fast, "on"), (kserve, "off")):
        before = len(timing.findall(server.log.read_text()))
        answer = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=matrix_request(),
                            headers={"x-request-id": f"flags-{state}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 10
        while True:  # the timing lines follow the answer (the middleware writes them once the app has returned)
            text = server.log.read_text()
            lines = [line for line in text.splitlines() if timing.search(line)][before:]
            if f"requestId: flags-{state}, preprocess_ms: " in text and {"'time:wall'", "'time:cpu'"} <= {
                    tag for line in lines for tag in ("'time:wall'", "'time:cpu'") if tag in line}:
                break
            assert time.monotonic() < deadline, text[-2000:]
            time.sleep(0.1)
        assert f"mlserving: v2 fast path {state}" in text
        assert all("'http_status:200', 'http_method:POST'" in line for line in lines), lines
