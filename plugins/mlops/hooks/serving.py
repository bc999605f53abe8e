"""ServingHook: an inference client of a KServe model server (the serving image's `mlserving`, or an
InferenceService): health, metadata, the served registry version, a smoke test, and a swap through
KServe's own `POST /v2/repository/models/{name}/load`.

Connection `mlserving_default` (type http): the local target's model server. The kubernetes target
passes the InferenceService's URL (or the gateway's) as `base_url`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mlops.hooks.http import HttpServiceHook, ServiceError, error_message


class ServingError(ServiceError):
    """The model server refused or failed; the message is its own reason."""


class ServingUnreachable(ServingError):
    """The model server did not answer at all (not running, killed): nothing is known about the model."""


class ServingHook(HttpServiceHook):
    conn_name_attr = "mlserving_conn_id"
    default_conn_name = "mlserving_default"
    conn_type = "mlserving"
    hook_name = "model server"
    error_class = ServingError
    unreachable_class = ServingUnreachable
    # The Open Inference Protocol's server liveness (KServe's model server; the local router answers it too)
    test_path = "/v2/health/live"
    host_placeholder = "http://127.0.0.1:8085 (the local router)"

    def __init__(self, model_name: str = "", mlserving_conn_id: str | None = None, *,
                 repository_token: Callable[[], str] | None = None, **kwargs):
        """`model_name`: the model the calls are about (none for a connection test, which asks the server)."""
        super().__init__(mlserving_conn_id, **kwargs)
        self.model_name = model_name
        # Sent with a model load only, never with inference calls: the server refuses loads without it.
        self.repository_token = repository_token

    @property
    def infer_url(self) -> str:
        """The model's v2 inference endpoint."""
        return f"{self.base_url}/v2/models/{self.model_name}/infer"

    def _probe(self, path: str) -> bool:
        try:
            return self.request("GET", path, attempts=1, timeout=5).status_code == 200
        except ServingError:
            return False

    def is_live(self) -> bool:
        return self._probe("/v2/health/live")

    def model_ready(self) -> bool:
        return self._probe(f"/v2/models/{self.model_name}/ready")

    def metadata(self) -> dict:
        return self.json("GET", f"/v2/models/{self.model_name}")

    def served_version(self) -> str | None:
        """The registry version being served, or None if nothing answers."""
        try:
            return self.metadata()["parameters"]["registry_version"]
        except (ServingError, KeyError):
            return None

    def load(self) -> None:
        """Swap in what the model's directory holds now; a refusal (the old model keeps serving) is final."""
        headers = {"Authorization": f"Bearer {self.repository_token()}"} if self.repository_token else {}
        response = self.request("POST", f"/v2/repository/models/{self.model_name}/load", attempts=1, timeout=300,
                                headers=headers)
        if response.status_code != 200:
            raise ServingError(f"load refused: HTTP {response.status_code} {error_message(response)}")

    def smoke_test(self, expected_version: str, regression: bool = False) -> dict:
        """A real v2 inference built from the model's signature: one row, each input of its datatype (a number
        for a numeric one, a text for BYTES: a category the model never saw, which it must answer too). The
        answer must be one of the model's classes, or for a `regression` model one finite number (FP64)."""
        meta = self.metadata()
        body = {"inputs": [{"name": i["name"], "shape": [1], "datatype": i["datatype"],
                            "data": ["smoke-test"] if i["datatype"] == "BYTES" else [1.0]} for i in meta["inputs"]]}
        answer = self.json("POST", f"/v2/models/{self.model_name}/infer", body=body)
        output = answer["outputs"][0]
        predicted = output["data"]
        if answer.get("model_version") != expected_version:
            raise ServingError(f"smoke test: served version {answer.get('model_version')}, expected {expected_version}")
        if regression:
            fits = len(predicted) == 1 and _is_number(predicted[0], output.get("datatype"))
        else:
            fits = len(predicted) == 1 and predicted[0] in (meta.get("parameters") or {}).get("classes", ())
        if not fits:
            what = f" ({output.get('datatype')}: a regression model answers one FP64 number)" if regression else ""
            raise ServingError(f"smoke test: unexpected prediction {predicted}{what}")
        return {"request": body, "prediction": predicted[0], "model_version": answer["model_version"]}


def _is_number(value, datatype: str | None) -> bool:
    """A regression model's answer: a finite number in an FP64 tensor."""
    return (datatype == "FP64" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
