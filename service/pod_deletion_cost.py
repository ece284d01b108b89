"""Publish this pod's live tracking sessions as `controller.kubernetes.io/pod-deletion-cost`.

A ReplicaSet scaling down removes the pods with the lowest cost first, so an autoscaler's scale-down
takes the idlest replicas and cuts as few WebSockets as it can. The pod patches its own annotation
through the Kubernetes API with its service account token (the chart grants `patch` on pods).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sam2.service")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeTarget:
    """Where to send the patch: the API server, this pod, and the service account's credentials."""

    api_url: str
    namespace: str
    pod: str
    token_file: Path = SERVICE_ACCOUNT / "token"
    ca_file: Path | None = SERVICE_ACCOUNT / "ca.crt"

    @classmethod
    def from_settings(cls, settings) -> KubeTarget:
        """From SAM2_POD_NAME / SAM2_POD_NAMESPACE (the downward API) and the in-cluster API address."""
        if not settings.pod_name:
            raise ValueError("SAM2_POD_DELETION_COST needs SAM2_POD_NAME (the chart sets it from metadata.name)")
        namespace = settings.pod_namespace
        if not namespace and (SERVICE_ACCOUNT / "namespace").is_file():
            namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
        if not namespace:
            raise ValueError("SAM2_POD_DELETION_COST needs SAM2_POD_NAMESPACE (the chart sets it from "
                             "metadata.namespace)")
        api = settings.kube_api_url
        if not api:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ValueError("SAM2_POD_DELETION_COST: not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST) "
                                 "and SAM2_KUBE_API_URL is unset")
            api = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(api.rstrip("/"), namespace, settings.pod_name)

    def patch_cost(self, cost: int, timeout: float = 5.0) -> None:
        """One merge-patch of the annotation; raises OSError (urllib's errors) when the API refuses."""
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: str(cost)}}}).encode()
        req = urllib.request.Request(
            f"{self.api_url}/api/v1/namespaces/{self.namespace}/pods/{self.pod}", data=body, method="PATCH",
            headers={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
        )
        if self.token_file.is_file():  # read every time: bound tokens are rotated on disk
            req.add_header("Authorization", f"Bearer {self.token_file.read_text().strip()}")
        context = None
        if self.api_url.startswith("https:"):
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file and self.ca_file.is_file() else None)
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            resp.read()


class DeletionCostPublisher:
    """Every `interval` seconds, patch the annotation when the session count has changed since the last
    successful patch. Failures are logged (once until the next success) and retried; they never stop serving."""

    def __init__(self, target: KubeTarget, count: Callable[[], int], interval: float = 10.0) -> None:
        self.target, self.count, self.interval = target, count, interval
        self.published: int | None = None
        self.failures = 0
        self._task: asyncio.Task | None = None

    async def publish_once(self) -> bool:
        cost = self.count()
        if cost == self.published:
            return True
        try:
            await asyncio.to_thread(self.target.patch_cost, cost)
        except (OSError, ValueError) as exc:
            if self.failures == 0:
                log.warning("pod-deletion-cost: patching pod %s/%s failed (%s); retrying every %.0f s",
                            self.target.namespace, self.target.pod, exc, self.interval)
            self.failures += 1
            return False
        self.published, self.failures = cost, 0
        return True

    async def _run(self) -> None:
        while True:
            await self.publish_once()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pod-deletion-cost")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
