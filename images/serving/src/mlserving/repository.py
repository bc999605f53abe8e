"""The model repository KServe's `POST /v2/repository/models/{name}/load` drives: it swaps a model
in place, as KServe's SKLearnModelRepository loads `<models_dir>/<name>`.

`load(name)` reloads the model from its directory as that directory is *now*: the local deploy points
a link (`.../current`) at the version it fetched, then asks for a load; in a cluster the directory is
KServe's `/mnt/models`. The new version is loaded beside the serving one and test-predicted, and only
then switched in (RegistryModel.swap); if it cannot serve, the old one keeps serving and KServe answers
the request 503 with the reason (its ModelNotReady).
"""

from __future__ import annotations

from kserve.errors import ModelNotFound
from kserve.model_repository import ModelRepository

from .model import RegistryModel


class RegistryModelRepository(ModelRepository):
    def __init__(self, models: list[RegistryModel]):
        super().__init__()
        for model in models:
            self.update(model)

    def load(self, name: str) -> bool:
        model = self.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        model.swap()
        return model.ready
