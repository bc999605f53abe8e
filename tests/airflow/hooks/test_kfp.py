"""KfpHook's own fields (the swagger-checked calls are in test_kfp_contract.py)."""

from __future__ import annotations

import pytest

from mlops.hooks.kfp import KfpError, KfpHook

from ..conftest import connect


def test_the_connection_s_extras_name_namespace_ui_and_token_file(monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("rotated\n")
    connect(monkeypatch, kfp_default=f'{{"conn_type": "http", "host": "http://ml-pipeline.kubeflow:8888", '
                                     f'"extra": {{"namespace": "team-a", "ui_url": "https://kfp.example.com", '
                                     f'"token_path": "{token}"}}}}')
    hook = KfpHook()
    assert hook.host == "http://ml-pipeline.kubeflow:8888" and hook.namespace == "team-a"
    assert hook.run_url("r-1") == "https://kfp.example.com/#/runs/details/r-1"
    assert hook.headers() == {"Authorization": "Bearer rotated"}
    token.write_text("rotated-again")  # a projected token is re-read on every request
    assert hook.headers() == {"Authorization": "Bearer rotated-again"}


def test_an_unreadable_token_file_is_named(tmp_path):
    with pytest.raises(KfpError, match=f"cannot read the KFP token file {tmp_path / 'none'}"):
        KfpHook(host="http://kfp", token_path=str(tmp_path / "none")).headers()


def test_the_connection_test_asks_the_api_s_health_with_the_connection_s_token(monkeypatch):
    """Against the swagger-checked KFP server (tests/cluster/kfp.py): the right token passes, a wrong one is
    refused with the API's own reason."""
    import json

    from tests.cluster.kfp import FakeKfp

    with FakeKfp(token="s3cret") as kfp:
        for password, expected in (("s3cret", True), ("wrong", False)):
            connect(monkeypatch, kfp_default=json.dumps({"conn_type": "kfp", "host": kfp.url, "password": password}))
            ok, message = KfpHook(kfp_conn_id="kfp_default").test_connection()
            assert ok is expected, message
        assert "HTTP 401: Unauthenticated: missing or wrong bearer token" in message
        assert kfp.violations == []
