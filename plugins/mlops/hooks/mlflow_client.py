"""MLflow's own client, given its host credentials by the caller instead of by the process environment.

MLflow's client reads who it is from the environment only (MLFLOW_TRACKING_USERNAME/_PASSWORD/_TOKEN,
`mlflow/utils/credentials.py` `get_default_host_creds`; a setter is asked for in mlflow/mlflow#8584 and
#12520, both open). Its REST stores, though, take the credentials as a callable: MLflow builds each one as
`RestStore(partial(get_default_host_creds, uri))` (`mlflow/tracking/_tracking_service/utils.py`,
`mlflow/tracking/_model_registry/utils.py` `_get_rest_store`) and calls it before every request
(`mlflow/store/tracking/rest_store.py` `call_endpoint`). So `ConnectionClient` is `MlflowClient` over those
same two stores built with the caller's callable: every request, its retries (MLflow's policy,
`mlflow/utils/rest_utils.py` `http_request`), its TLS settings and its error parsing stay MLflow's, and no
secret is written into the process environment, where every later subprocess would inherit it.

`ProxiedArtifacts` does the same for the tracking server's artifact proxy (`mlflow-artifacts:/` URIs):
MLflow's `MlflowArtifactsRepository`, whose downloads (listing, path checks, parallel and multipart
transfers) are MLflow's, with the credentials taken from the callable.

Written against mlflow-skinny 3.17.2 (requirements.in pins it); tests/airflow/hooks/test_mlflow.py and
tests/airflow/test_local_mlflow_auth.py run them against real tracking servers, with and without MLflow's
basic-auth app, so a change in these internals fails a test rather than sending calls unauthenticated.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from mlflow.entities import FileInfo
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
from mlflow.store.tracking.rest_store import RestStore as TrackingRestStore
from mlflow.tracking import MlflowClient
from mlflow.tracking._model_registry.client import ModelRegistryClient
from mlflow.tracking._tracking_service.client import TrackingServiceClient
from mlflow.utils.request_utils import augmented_raise_for_status
from mlflow.utils.rest_utils import MlflowHostCreds, http_request
from mlflow.utils.uri import validate_path_is_safe

# Host creds for a URL: the server's root, or an artifact URL under it (MLflow keys them by host the same way).
HostCreds = Callable[[str], MlflowHostCreds]


class _TrackingService(TrackingServiceClient):
    """MLflow's tracking service client; its `store` (a property MLflow resolves from the URI on every
    call) is the one given."""

    def __init__(self, store: TrackingRestStore, tracking_uri: str):
        self._store = store
        super().__init__(tracking_uri)

    @property
    def store(self):
        return self._store


class _ModelRegistry(ModelRegistryClient):
    """MLflow's model registry client, with the same difference."""

    def __init__(self, store: RegistryRestStore, registry_uri: str):
        self._store = store
        super().__init__(registry_uri, registry_uri)

    @property
    def store(self):
        return self._store


class ConnectionClient(MlflowClient):
    """`MlflowClient(tracking_uri)` whose tracking and registry calls carry `host_creds(tracking_uri)`."""

    def __init__(self, tracking_uri: str, host_creds: HostCreds):
        super().__init__(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # builds stores, sends nothing
        creds = lambda: host_creds(tracking_uri)  # noqa: E731  (what RestStore calls before each request)
        self._tracking_client = _TrackingService(TrackingRestStore(creds), tracking_uri)
        self._connection_registry = _ModelRegistry(RegistryRestStore(creds), tracking_uri)

    def _get_registry_client(self):
        # MlflowClient's one way to its registry client (it builds one lazily from the environment's creds).
        return self._connection_registry


class ProxiedArtifacts(MlflowArtifactsRepository):
    """MLflow's repository for `mlflow-artifacts:` URIs, served by the tracking server at `tracking_uri`."""

    def __init__(self, artifact_uri: str, tracking_uri: str, host_creds: HostCreds):
        self._connection_creds = host_creds
        super().__init__(artifact_uri, tracking_uri=tracking_uri)

    @property
    def _host_creds(self):  # HttpArtifactRepository: the creds of every file transfer
        return self._connection_creds(self.artifact_uri)

    @property
    def _artifact_server_host_creds(self):  # MlflowArtifactsRepository: the creds of its /server-info probe
        root, _, _ = self.artifact_uri.partition("/api/2.0/mlflow-artifacts/artifacts")
        return self._connection_creds(root.rstrip("/"))

    def list_artifacts(self, path=None):
        # HttpArtifactRepository.list_artifacts (mlflow 3.17.2, mlflow/store/artifact/http_artifact_repo.py)
        # line for line, but for where its credentials come from: MLflow's reads them from the environment
        # itself rather than through `_host_creds`. Every listed name goes through MLflow's
        # validate_path_is_safe, so a listing cannot lead a download out of its folder.
        endpoint = "/mlflow-artifacts/artifacts"
        url, tail = self.artifact_uri.split(endpoint, maxsplit=1)
        root = tail.lstrip("/")
        params = {"path": posixpath.join(root, path) if path else root}
        resp = http_request(self._connection_creds(url), endpoint, "GET", params=params)
        augmented_raise_for_status(resp)
        file_infos = []
        for f in resp.json().get("files", []):
            validated_path = validate_path_is_safe(f["path"])
            file_infos.append(FileInfo(posixpath.join(path, validated_path) if path else validated_path,
                                       f["is_dir"], int(f["file_size"]) if ("file_size" in f) else None))
        # As MLflow's: a path that names a single file lists as empty.
        if (len(file_infos) == 1 and not file_infos[0].is_dir and path is not None
                and file_infos[0].path == posixpath.join(path, posixpath.basename(path))):
            return []
        return sorted(file_infos, key=lambda f: f.path)
