"""The pod publishes its live tracking sessions as its pod-deletion-cost.

The Kubernetes API cannot run here: a small HTTP server on 127.0.0.1 records the PATCH requests the
Kubernetes API would receive, and answers as it would (200, or 403 without RBAC).
"""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.pod_deletion_cost import ANNOTATION, DeletionCostPublisher, KubeTarget
from tests.service.conftest import make_settings, running_engine
from tests.model_core.video_fixtures import tracking_model


class FakeKubeAPI:
    """Records (path, headers, body) of each PATCH; answers `status` (200 by default)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict, dict]] = []
        self.status = 200
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.patches.append((self.path, dict(self.headers), body))
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def costs(self) -> list[str]:
        return [body["metadata"]["annotations"][ANNOTATION] for _, _, body in self.patches]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kube():
    api = FakeKubeAPI()
    yield api
    api.close()


def target(kube, tmp_path) -> KubeTarget:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    return KubeTarget(kube.url, "ml", "sam2-abc", token_file=token, ca_file=None)


def test_patches_only_when_the_count_changes(kube, tmp_path):
    count = [0]
    pub = DeletionCostPublisher(target(kube, tmp_path), lambda: count[0], interval=60)

    async def scenario():
        assert await pub.publish_once()
        assert await pub.publish_once()  # unchanged: no second request
        count[0] = 3
        assert await pub.publish_once()

    asyncio.run(scenario())
    assert kube.costs() == ["0", "3"]
    path, headers, _ = kube.patches[0]
    assert path == "/api/v1/namespaces/ml/pods/sam2-abc"
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer tok-1"


def test_a_refused_patch_is_retried_and_never_raises(kube, tmp_path):
    pub = DeletionCostPublisher(target(kube, tmp_path), lambda: 2, interval=60)
    kube.status = 403  # no RBAC yet
    assert asyncio.run(pub.publish_once()) is False
    assert pub.published is None and pub.failures == 1
    kube.status = 200
    assert asyncio.run(pub.publish_once()) is True
    assert pub.published == 2 and kube.costs() == ["2", "2"]


def test_the_token_is_read_again_for_each_patch(kube, tmp_path):
    t = target(kube, tmp_path)
    count = [1]
    pub = DeletionCostPublisher(t, lambda: count[0], interval=60)
    asyncio.run(pub.publish_once())
    t.token_file.write_text("tok-2")  # the kubelet rotated the bound token
    count[0] = 0
    asyncio.run(pub.publish_once())
    assert [h["Authorization"] for _, h, _ in kube.patches] == ["Bearer tok-1", "Bearer tok-2"]


def test_missing_pod_identity_is_a_clear_startup_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="SAM2_POD_NAME"):
        KubeTarget.from_settings(make_settings(pod_deletion_cost=True))
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_HOST"):
        KubeTarget.from_settings(make_settings(pod_deletion_cost=True, pod_name="p", pod_namespace="ns"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    t = KubeTarget.from_settings(make_settings(pod_deletion_cost=True, pod_name="p", pod_namespace="ns"))
    assert (t.api_url, t.namespace, t.pod) == ("https://10.0.0.1:6443", "ns", "p")


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_service_publishes_its_open_sessions(kube, tmp_path):
    """Opening two /v1/track sockets raises the cost to 2; closing them brings it back to 0."""
    settings = dict(pod_deletion_cost=True, pod_deletion_cost_interval=0.05, pod_name="sam2-abc",
                    pod_namespace="ml", kube_api_url=kube.url)
    with running_engine(tracking_model(128)) as engine:
        app = create_app(make_settings(**settings), engine=engine)
        with TestClient(app) as client:
            assert wait_for(lambda: kube.costs()[-1:] == ["0"])
            with client.websocket_connect("/v1/track") as a, client.websocket_connect("/v1/track") as b:
                for ws in (a, b):
                    ws.send_json({"type": "start"})
                    assert ws.receive_json()["type"] == "session"
                assert wait_for(lambda: kube.costs()[-1:] == ["2"]), kube.costs()
            assert wait_for(lambda: kube.costs()[-1:] == ["0"]), kube.costs()
    assert kube.patches[0][0] == "/api/v1/namespaces/ml/pods/sam2-abc"
