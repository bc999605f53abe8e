"""Routes added in front of KServe's: model swap (repository load), richer metadata, outcome counting.

POST /v2/repository/models/{name}/load  body (optional): {"parameters": {"model_dir": "/path"}}
  loads the directory beside the serving model, test-predicts, switches atomically.
  200 with the new version; 422 with the reason (and the old model still serving) if it cannot serve;
  404 for an unknown model. Without a body it reloads the current directory.
GET /v2/models/{name}  OIP model metadata plus versions and the registry version / run id.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

from .loader import ModelLoadError
from .metrics import REQUESTS
from .model import RegistryModel


def _outcome(status: int) -> str:
    return "ok" if status < 400 else "client_error" if status < 500 else "server_error"


class OutcomeCounter:
    """Pure ASGI middleware: counts every inference response (including ones KServe rejects
    before the model sees them) by model, served version and outcome."""

    def __init__(self, app, models: dict[str, RegistryModel]):
        self.app, self.models = app, models

    def _target(self, path: str) -> str | None:
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return path[len("/v2/models/"):].split("/", 1)[0]
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return path[len("/v1/models/"):-len(":predict")]
        return None

    async def __call__(self, scope, receive, send):
        model_name = self._target(scope["path"]) if scope["type"] == "http" else None
        if model_name is None:
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                model = self.models.get(model_name)
                version = model.active.version if model is not None and model.active else "unknown"
                REQUESTS.labels(model_name if model else "unknown", version, _outcome(message["status"])).inc()
            await send(message)

        return await self.app(scope, receive, counting_send)


def install(app: FastAPI, models: dict[str, RegistryModel]) -> None:
    """Call before KServe registers its routes: the first matching route wins."""

    @app.post("/v2/repository/models/{model_name}/load")
    async def load(model_name: str, request: Request):
        model = models.get(model_name)
        if model is None:
            return ORJSONResponse({"error": f"model {model_name!r} does not exist"}, status_code=404)
        body = await request.body()
        model_dir = None
        if body.strip():
            try:
                doc = json.loads(body)
                model_dir = (doc.get("parameters") or {}).get("model_dir")
            except (ValueError, AttributeError):
                return ORJSONResponse({"error": 'body must be JSON like {"parameters": {"model_dir": "/path"}}'},
                                      status_code=400)
            if model_dir is not None and not isinstance(model_dir, str):
                return ORJSONResponse({"error": "parameters.model_dir must be a string path"}, status_code=400)
        try:
            result = await asyncio.to_thread(model.swap, model_dir)
        except ModelLoadError as exc:
            return ORJSONResponse({"error": f"not loaded, still serving version {model.active.version}: {exc}"},
                                  status_code=422)
        return ORJSONResponse(result)

    @app.get("/v2/models/{model_name}")
    async def metadata(model_name: str):
        model = models.get(model_name)
        if model is None:
            return ORJSONResponse({"error": f"Model with name {model_name} does not exist."}, status_code=404)
        return ORJSONResponse(model.metadata())

    app.add_middleware(OutcomeCounter, models=models)
