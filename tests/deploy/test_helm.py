"""The Helm chart, rendered by a real helm binary and validated like a cluster would: core objects with
kubernetes-validate --strict, custom resources with their generated models, values with values.schema.json."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml

from .conftest import CHART, DASHBOARD, PROMETHEUS_DIR, REPO, load_yaml_docs, run, tool

PRODUCTION = REPO / "deploy" / "helm" / "examples" / "production.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30", "1.37"]
CORE_GROUPS = ("v1", "apps/", "autoscaling/", "policy/", "networking.k8s.io/", "batch/", "rbac.authorization.k8s.io/")
CRD_UNVALIDATED = {("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy")}  # no offline schema; checked below

VARIANTS = {
    "default": [],
    "production": ["-f", PRODUCTION],
    "istio-header": ["-f", PRODUCTION, "--set", "httpRoute.sessionAffinity.provider=istio",
                     "--set", "httpRoute.sessionAffinity.source=header", "--set", "httpRoute.sessionAffinity.name=X-Session"],
    "ingress-bundled-redis": ["--set", "ingress.enabled=true", "--set", "redis.mode=bundled", "--set", "replicaCount=2",
                              "--set", "auth.enabled=true", "--set", "auth.keyHashes={" + "ab" * 32 + "}",
                              "--set", "autoscaling.enabled=true", "--set", "weights.persistence.enabled=true",
                              "--set", "weights.persistence.storageClassName=nfs"],
}


def helm_template(*args, check: bool = True, kube_version: str = "1.35"):
    return run([tool("helm"), "template", "sam2", CHART, "--namespace", "sam2", "--kube-version", kube_version, *args],
               check=check)


def render(*args) -> list[dict]:
    return load_yaml_docs(helm_template(*args).stdout)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def container_env(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["env"]


def env_value(deployment: dict, name: str):
    for e in container_env(deployment):
        if e["name"] == name:
            return e.get("value", e.get("valueFrom"))
    return None


def kubernetes_validate(manifests: str, version: str) -> str:
    proc = run([tool("kubernetes-validate"), "--strict", "-k", version, "-"], input=manifests, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "ERROR" not in out, out
    return out


# ---- rendering + schema validation of every manifest ---------------------------------------------------

def test_helm_lint_strict():
    run([tool("helm"), "lint", "--strict", CHART])
    run([tool("helm"), "lint", "--strict", CHART, "-f", PRODUCTION])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_core_objects_pass_strict_kubernetes_schemas(variant, version):
    manifests = helm_template(*VARIANTS[variant], kube_version=version).stdout
    out = kubernetes_validate(manifests, version)
    docs = load_yaml_docs(manifests)
    core = [d for d in docs if d["apiVersion"].startswith(CORE_GROUPS)]
    assert core and len(re.findall(r"passed for resource", out)) == len(core), out
    # only custom resources may lack a bundled schema; those are validated by the test below
    for line in out.splitlines():
        if "Couldn't find schema" in line:
            assert not re.search(r"api version (v1|apps/|autoscaling/|policy/|networking\.k8s\.io/|rbac\.)", line), line


def test_kubernetes_validate_rejects_what_helm_lint_lets_through():
    """The failure mode of the issue: helm lint passed `replicas: "1"`; this pipeline must not."""
    manifests = helm_template().stdout.replace("  replicas: 1\n", '  replicas: "1"\n', 1)
    assert 'replicas: "1"' in manifests
    proc = run([tool("kubernetes-validate"), "--strict", "-k", "1.35", "-"], input=manifests, check=False)
    assert proc.returncode != 0 and "is not of type 'integer'" in proc.stdout + proc.stderr
    bogus = helm_template().stdout.replace("      serviceAccountName:", "      bogusField: 1\n      serviceAccountName:", 1)
    proc = run([tool("kubernetes-validate"), "--strict", "-k", "1.35", "-"], input=bogus, check=False)
    assert proc.returncode != 0 and "bogusField" in proc.stdout + proc.stderr


def validate_custom_resources(docs: list[dict]) -> list[dict]:
    node = tool("node")
    results = run([node, REPO / "tests" / "deploy" / "validate_crds.mjs", tool("node-modules")],
                  input=json.dumps(docs)).stdout
    return json.loads(results)


@pytest.mark.parametrize("variant", ["production", "istio-header"])
def test_custom_resources_match_their_crd_models(variant):
    docs = [d for d in render(*VARIANTS[variant]) if not d["apiVersion"].startswith(CORE_GROUPS)]
    kinds = {d["kind"] for d in docs}
    assert {"HTTPRoute", "ServiceMonitor", "PrometheusRule"} <= kinds
    for r in validate_custom_resources(docs):
        if (r["apiVersion"], r["kind"]) in CRD_UNVALIDATED:
            continue
        assert r["status"] == "valid", r


def test_crd_validation_can_fail():
    docs = [d for d in render(*VARIANTS["production"]) if d["kind"] in ("HTTPRoute", "ServiceMonitor")]
    docs[0] = json.loads(json.dumps(docs[0]))
    for d in docs:
        if d["kind"] == "HTTPRoute":
            d["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefixx"
        else:
            d["spec"]["endpoints"][0]["interval"] = "15 seconds"
    results = validate_custom_resources(docs)
    assert [r["status"] for r in results] == ["invalid"] * len(docs), results


# ---- values.schema.json and template guards -------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--set", "replicaCount=abc"], "/replicaCount"),
    (["--set-string", "replicaCount=1"], "/replicaCount"),
    (["--set", "settings.max_batch=many"], "/settings/max_batch"),
    (["--set", "settings.port=9000"], "/settings"),            # set by the chart, not by settings
    (["--set", "settings.Max-Batch=8"], "Max-Batch"),
    (["--set", "settings.track_backpressure=drop_newest"], "/settings/track_backpressure"),
    (["--set", "model.name=sam3_l"], "/model/name"),
    (["--set", "model.imageSize=500"], "/model/imageSize"),
    (["--set", "model.dtype=int8"], "/model/dtype"),
    (["--set", "redis.mode=cluster"], "/redis/mode"),
    (["--set", "gpu.count=0"], "/gpu/count"),
    (["--set", "auth.keyHashes={not-a-digest}"], "/auth/keyHashes"),
    (["--set", "httpRoute.sessionAffinity.provider=nginx"], "/httpRoute/sessionAffinity/provider"),
    (["--set", "metrics.serviceMonitor.interval=15"], "/metrics/serviceMonitor/interval"),
    (["--set", "resources.limits.memory=lots"], "/resources/limits/memory"),
    (["--set", "replicaCoutn=2"], "replicaCoutn"),              # typo in a key
    (["--set", "rollout.maxSurge=one"], "/rollout/maxSurge"),
])
def test_values_schema_rejects_bad_values(args, message):
    proc = helm_template(*args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "schema" in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "replicaCount=2"], "needs a shared session store"),
    (["--set", "autoscaling.enabled=true"], "needs a shared session store"),
    (["--set", "redis.mode=external"], "redis.external.existingSecret"),
    (["--set", "auth.enabled=true"], "auth.existingSecret or auth.keyHashes"),
    (["--set", "rollout.maxSurge=0"], "cannot both be 0"),
    (["--set", "weights.persistence.enabled=true"], "weights.persistence needs storageClassName"),
    (["--set", "weights.url=https://mirror.example/x.pt"], "need weights.sha256"),
    (["--set", "weights.seed.enabled=true"], "need weights.sha256"),
    (["--set", "rollout.progressDeadlineSeconds=600"], "must exceed the startup probe's budget (900 s)"),
])
def test_inconsistent_values_fail_with_a_reason(args, message):
    proc = helm_template(*args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_schema_model_pattern_accepts_exactly_the_names_model_core_knows():
    from model_core.configs import canonical_name

    pattern = json.loads((CHART / "values.schema.json").read_text())["properties"]["model"]["properties"]["name"]["pattern"]
    names = [f"{p}{sep}{s}{ext}" for p in ("sam2", "sam2.1", "sam3", "sam2.2")
             for sep in ("_", "_hiera_", "-") for s in ("t", "s", "b", "b+", "l", "tiny", "small", "base_plus", "large", "xl")
             for ext in ("", ".pt")]
    for name in names:
        accepted = re.search(pattern, name) is not None
        try:
            canonical_name(name)
            known = True
        except ValueError:
            known = False
        # the schema may be stricter than model_core (no '-' spelling), never looser
        assert not accepted or known, name
        if "-" not in name:
            assert accepted == known, name


def test_typed_settings_are_real_service_settings():
    from service.settings import Settings

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["settings"]
    fields = set(Settings.model_fields)
    assert set(schema["properties"]) <= fields, set(schema["properties"]) - fields
    managed = {req["required"][0] for req in schema["not"]["anyOf"]}
    assert {"host", "port", "model", "device", "api_keys"} <= managed


# ---- what the chart renders ----------------------------------------------------------------------------

def test_default_render_is_a_single_cpu_replica_with_probes_and_graceful_shutdown():
    docs = render()
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert dep["spec"]["replicas"] == 1
    assert c["image"] == "sam2-service:0.1.0"
    assert env_value(dep, "SAM2_DEVICE") == "cpu" and env_value(dep, "SAM2_HOST") == "0.0.0.0"
    assert env_value(dep, "SAM2_MAX_BATCH") == "8" and env_value(dep, "SAM2_WARMUP") == "true"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600  # download + warm-up
    # preStop (leave the endpoints) + uvicorn's 10 s drain + engine stop must fit in the grace period
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 10 + 10
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/weights"} <= mounts and env_value(dep, "SAM2_WEIGHTS_DIR") == "/weights"
    assert "nvidia.com/gpu" not in json.dumps(c["resources"])
    assert not by_kind(docs, "HorizontalPodAutoscaler") and not by_kind(docs, "StatefulSet")
    assert env_value(dep, "SAM2_REDIS_URL") is None and env_value(dep, "SAM2_API_KEYS") is None


def test_production_render_gpu_redis_keys_autoscaling_monitoring():
    docs = render("-f", PRODUCTION)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "replicas" not in dep["spec"]  # the HPA owns it
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and env_value(dep, "SAM2_DEVICE") == "cuda"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"]
    assert env_value(dep, "SAM2_REDIS_URL") == {"secretKeyRef": {"name": "sam2-redis", "key": "redis-url"}}
    assert env_value(dep, "SAM2_API_KEYS") == {"secretKeyRef": {"name": "sam2-api-keys", "key": "api-key-hashes"}}
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"] == ["sam2_queue_depth"]
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    claim = pod["volumes"][[v["name"] for v in pod["volumes"]].index("weights")]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "sam2-service"} in sm["spec"]["endpoints"][0]["relabelings"]
    # the alerts group by namespace (the operator's target label) and release: releases stay apart
    assert {"targetLabel": "release", "replacement": "sam2"} in sm["spec"]["endpoints"][0]["relabelings"]
    # the ServiceMonitor selects the api Service only (the track Service has the same pods: no double scrape)
    selected = [s for s in by_kind(docs, "Service")
                if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == [dep["metadata"]["name"]]


def test_rollout_strategy_is_a_value_and_the_deadline_covers_the_startup_budget():
    def deadline_and_strategy(*args):
        dep = one(render(*args), "Deployment")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        return dep["spec"]["progressDeadlineSeconds"], startup, dep["spec"]["strategy"]["rollingUpdate"]

    deadline, startup, strategy = deadline_and_strategy()
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0} and deadline == startup + 600
    # the production example is for fully allocated GPU pools: replace in place, no surge pod
    deadline, startup, strategy = deadline_and_strategy("-f", PRODUCTION)
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}
    assert startup == 1200 and deadline == 1800
    deadline, _, _ = deadline_and_strategy("--set", "rollout.progressDeadlineSeconds=2400")
    assert deadline == 2400


def test_seeding_init_container_fetches_pinned_weights_into_the_shared_volume():
    sha = "AB" * 32
    docs = render("-f", PRODUCTION, "--set", "weights.seed.enabled=true", "--set", f"weights.sha256={sha}",
                  "--set", "weights.url=https://models.internal.example/sam2.1_hiera_large.pt")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    service = pod["containers"][0]
    assert init["args"] == ["fetch-weights"] and init["image"] == service["image"]
    init_env = {e["name"]: e["value"] for e in init["env"]}
    assert init_env == {"SAM2_MODEL": "sam2.1_l", "SAM2_WEIGHTS_DIR": "/weights", "SAM2_WEIGHTS_SHA256": sha.lower(),
                        "SAM2_WEIGHTS_URL": "https://models.internal.example/sam2.1_hiera_large.pt"}
    # the service checks the same digest should it download itself; the init container needs no GPU
    assert env_value(one(docs, "Deployment"), "SAM2_WEIGHTS_SHA256") == sha.lower()
    assert "nvidia.com/gpu" not in json.dumps(init["resources"])
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts["weights"] == "/weights" and init["securityContext"]["readOnlyRootFilesystem"]
    claim = pod["volumes"][[v["name"] for v in pod["volumes"]].index("weights")]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)["spec"]["storageClassName"] == "shared-rwx"
    assert "initContainers" not in one(render(), "Deployment")["spec"]["template"]["spec"]


def test_an_existing_claim_needs_no_storage_class():
    docs = render("--set", "weights.persistence.enabled=true", "--set", "weights.persistence.existingClaim=weights")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "weights", "persistentVolumeClaim": {"claimName": "weights"}} in pod["volumes"]
    assert not by_kind(docs, "PersistentVolumeClaim")


def test_an_object_store_client_copies_the_weights_and_fetch_weights_checks_them():
    sha = "cd" * 32
    client = ["aws", "s3", "cp", "s3://models/sam2.1_hiera_large.pt", "/weights/sam2.1_hiera_large.pt"]
    manifests = helm_template("-f", PRODUCTION, "--set", "weights.seed.enabled=true", "--set", f"weights.sha256={sha}",
                              "--set", "weights.seed.client.image=amazon/aws-cli:2.31.0",
                              "--set-json", f"weights.seed.client.command={json.dumps(client)}",
                              "--set-json", 'weights.seed.client.envFrom=[{"secretRef":{"name":"s3-credentials"}}]').stdout
    kubernetes_validate(manifests, "1.30")
    pod = one(load_yaml_docs(manifests), "Deployment")["spec"]["template"]["spec"]
    copy, fetch = pod["initContainers"]  # in this order: copy, then check
    assert (copy["name"], copy["image"], copy["command"]) == ("copy-weights", "amazon/aws-cli:2.31.0", client)
    assert copy["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert {m["mountPath"] for m in copy["volumeMounts"]} == {"/weights", "/tmp"}
    assert copy["securityContext"]["readOnlyRootFilesystem"]
    assert fetch["args"] == ["fetch-weights"]
    assert {"name": "SAM2_WEIGHTS_SHA256", "value": sha} in fetch["env"]
    # a client without the checking step could put any file there
    result = helm_template("--set", "weights.seed.client.image=rclone/rclone:1.71", check=False)
    assert result.returncode != 0 and "weights.seed.client" in result.stderr


def test_weights_from_an_oci_image_volume_mount_read_only():
    ref = "registry.internal/sam2-weights:sam2.1_l@sha256:" + "ef" * 32
    manifests = helm_template("-f", PRODUCTION, "--set", "weights.persistence.enabled=false",
                              "--set", f"weights.image.reference={ref}").stdout
    kubernetes_validate(manifests, "1.37")  # image volumes: beta and on by default from 1.35
    docs = load_yaml_docs(manifests)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "weights", "image": {"reference": ref, "pullPolicy": "IfNotPresent"}} in pod["volumes"]
    assert {"name": "weights", "mountPath": "/weights", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert not by_kind(docs, "PersistentVolumeClaim")
    result = helm_template("-f", PRODUCTION, "--set", f"weights.image.reference={ref}", check=False)
    assert result.returncode != 0 and "weights.image" in result.stderr  # and a shared volume too: which one?


def test_pod_deletion_cost_gets_its_pod_identity_a_token_and_a_narrow_role():
    docs = render("-f", PRODUCTION)  # on in the production example
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    service = pod["containers"][0]
    env = {e["name"]: e for e in service["env"]}
    assert env["SAM2_POD_DELETION_COST"]["value"] == "true"
    assert env["SAM2_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SAM2_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # the token reaches the service container only, at the path in-cluster clients read
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True} in service["volumeMounts"]
    for init in pod.get("initContainers", []):
        assert "kube-api-access" not in {m["name"] for m in init["volumeMounts"]}
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    plain = render()
    assert not by_kind(plain, "Role") and "SAM2_POD_NAME" not in json.dumps(one(plain, "Deployment"))


def test_extra_volumes_mount_a_private_ca_for_rediss(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({
        "extraVolumes": [{"name": "redis-ca", "secret": {"secretName": "redis-ca"}}],
        "extraVolumeMounts": [{"name": "redis-ca", "mountPath": "/etc/redis-ca", "readOnly": True}]}))
    manifests = helm_template("-f", PRODUCTION, "-f", values).stdout
    kubernetes_validate(manifests, "1.37")
    pod = one(load_yaml_docs(manifests), "Deployment")["spec"]["template"]["spec"]
    assert {"name": "redis-ca", "secret": {"secretName": "redis-ca"}} in pod["volumes"]
    assert {"name": "redis-ca", "mountPath": "/etc/redis-ca", "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_image_tag_follows_gpu():
    dep = one(render("--set", "gpu.enabled=true"), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "sam2-service:0.1.0-cuda"


def test_track_route_hashes_on_the_session_and_reaches_the_api_pods():
    docs = render("-f", PRODUCTION)
    dep = one(docs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    route = one(docs, "HTTPRoute", "sam2-sam2-service-track")
    rule = route["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "Exact", "value": "/v1/track"}}]
    svc = one(docs, "Service", rule["backendRefs"][0]["name"])
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    policy = one(docs, "BackendTrafficPolicy")
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                             "name": route["metadata"]["name"]}]
    assert policy["spec"]["loadBalancer"] == {"type": "ConsistentHash", "consistentHash": {
        "type": "QueryParams", "queryParams": [{"name": "session"}]}}
    rest = one(docs, "HTTPRoute", "sam2-sam2-service")
    assert {"type": "PathPrefix", "value": "/v1"} in [m["path"] for m in rest["spec"]["rules"][0]["matches"]]

    istio = render(*VARIANTS["istio-header"])
    rule = one(istio, "DestinationRule")
    assert rule["spec"]["host"] == "sam2-sam2-service-track.sam2.svc.cluster.local"
    assert rule["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"] == {"httpHeaderName": "X-Session"}
    assert not by_kind(istio, "BackendTrafficPolicy")


def test_session_hash_key_is_what_clients_send_and_what_the_protocol_documents():
    """Clients without `?session=` all hash onto one replica: the chart's key, the client and the docs must agree."""
    import inspect

    from service.client import TrackSession

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    key = values["httpRoute"]["sessionAffinity"]["name"]
    assert values["ingress"]["trackAnnotations"][NGINX + "upstream-hash-by"] == f"$arg_{key}"
    assert f"session={{session}}" in inspect.getsource(TrackSession._connect) and key == "session"
    protocol = (REPO / "docs" / "protocol.md").read_text()
    assert f"/v1/track?{key}=" in protocol
    # the track timeout that cuts every socket is documented with its value
    timeout = values["gateway"]["trackTimeoutSeconds"]
    assert f"{timeout} s" in protocol and "gateway.trackTimeoutSeconds" in protocol


def test_ingress_variant_hashes_track_and_bundled_redis_is_persistent():
    docs = render(*VARIANTS["ingress-bundled-redis"])
    ingresses = {i["metadata"]["name"]: i for i in by_kind(docs, "Ingress")}
    track = ingresses["sam2-sam2-service-track"]
    assert track["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$arg_session"
    assert track["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/v1/track"
    assert "upstream-hash-by" not in json.dumps(ingresses["sam2-sam2-service"]["metadata"].get("annotations", {}))
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    # the governing Service of the StatefulSet is headless; clients use the ClusterIP one
    assert one(docs, "Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    assert one(docs, "Service", "sam2-sam2-service-redis")["spec"]["type"] == "ClusterIP"
    secret = one(docs, "Secret", "sam2-sam2-service-redis")
    assert len(secret["data"]["redis-password"]) > 20
    dep = one(docs, "Deployment")
    names = [e["name"] for e in container_env(dep)]
    # $(REDIS_PASSWORD) in SAM2_REDIS_URL only expands if it is defined earlier in the list
    assert names.index("REDIS_PASSWORD") < names.index("SAM2_REDIS_URL")
    assert env_value(dep, "SAM2_REDIS_URL") == "redis://:$(REDIS_PASSWORD)@sam2-sam2-service-redis:6379/0"
    assert env_value(dep, "SAM2_API_KEYS")["secretKeyRef"]["name"] == "sam2-sam2-service-auth"
    assert "checksum/auth" in dep["spec"]["template"]["metadata"]["annotations"]


NGINX = "nginx.ingress.kubernetes.io/"


@pytest.mark.parametrize("settings", [{}, {"request_timeout": 45.5, "max_image_bytes": 33554432}])
def test_gateway_timeouts_and_body_limits_come_from_the_service_settings(settings, tmp_path):
    """The gateway lets through what the service serves: its queue wait plus model time, its largest body."""
    from service.settings import Settings

    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"settings": settings}))
    expected = Settings(**settings)  # {}: the chart's defaults must agree with the service's
    docs = render("--set", "ingress.enabled=true", "--set", "httpRoute.enabled=true", "-f", values)
    timeout = math.ceil(expected.request_timeout) + 90
    assert one(docs, "HTTPRoute", "sam2-sam2-service")["spec"]["rules"][0]["timeouts"] == {"request": f"{timeout}s"}
    api = one(docs, "Ingress", "sam2-sam2-service")["metadata"]["annotations"]
    assert api[NGINX + "proxy-body-size"] == str(expected.max_request_bytes)
    assert api[NGINX + "proxy-read-timeout"] == api[NGINX + "proxy-send-timeout"] == str(timeout)
    # the WebSocket route: the track timeout, and no body limit (nginx does not apply it to WebSocket frames)
    track = one(docs, "Ingress", "sam2-sam2-service-track")["metadata"]["annotations"]
    assert track[NGINX + "proxy-read-timeout"] == "3600" and NGINX + "proxy-body-size" not in track
    assert one(docs, "HTTPRoute", "sam2-sam2-service-track")["spec"]["rules"][0]["timeouts"] == {"request": "3600s"}


def test_ingress_annotations_override_the_derived_limits():
    docs = render("--set", "ingress.enabled=true", "--set-string", "ingress.annotations." + NGINX.replace(".", "\\.")
                  + "proxy-body-size=64m")
    assert one(docs, "Ingress", "sam2-sam2-service")["metadata"]["annotations"][NGINX + "proxy-body-size"] == "64m"
    docs = render("--set", "ingress.enabled=true", "--set", "ingress.nginxLimits=false")
    assert NGINX + "proxy-body-size" not in json.dumps(by_kind(docs, "Ingress"))


def published_paths(docs: list[dict]) -> set[str]:
    routes = [rule for r in by_kind(docs, "HTTPRoute") for rule in r["spec"]["rules"]]
    ingresses = [rule for i in by_kind(docs, "Ingress") for rule in i["spec"]["rules"]]
    return ({m["path"]["value"] for rule in routes for m in rule["matches"]}
            | {p["path"] for rule in ingresses for p in rule["http"]["paths"]})


def test_gateway_publishes_the_api_not_metrics_or_docs():
    on = ["--set", "ingress.enabled=true", "--set", "httpRoute.enabled=true"]
    assert published_paths(render(*on)) == {"/v1", "/healthz", "/readyz", "/v1/track"}
    assert published_paths(render(*on, "--set", "gateway.publishDocs=true")) == {
        "/v1", "/healthz", "/readyz", "/v1/track", "/docs", "/openapi.json"}
    # what a real request path would match: nothing routes /metrics to the pods
    for path in published_paths(render(*on, "--set", "gateway.publishDocs=true")):
        assert not "/metrics".startswith(path), path


def test_network_policies_admit_the_gateway_to_the_api_and_only_the_api_to_redis():
    docs = render(*VARIANTS["ingress-bundled-redis"])
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    api, redis = policies["sam2-sam2-service"], policies["sam2-sam2-service-redis"]
    dep, sts = one(docs, "Deployment"), one(docs, "StatefulSet")
    assert api["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert api["policyTypes"] == ["Ingress"] and api["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert redis["podSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    [rule] = redis["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    api_pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= api_pod_labels.items()
    # the production example names the gateway's and Prometheus' namespaces, and keeps `helm test` working
    prod = one(render("-f", PRODUCTION), "NetworkPolicy")["spec"]["ingress"][0]["from"]
    namespaces = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for p in prod if "namespaceSelector" in p]
    assert namespaces == ["gateway-system", "monitoring"]
    test_pod = [d for d in render("-f", PRODUCTION) if d["kind"] == "Pod"][0]
    assert any("podSelector" in p and p["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()
               for p in prod)
    assert not by_kind(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_image_digest_pins_the_image():
    digest = "sha256:" + "0123456789abcdef" * 4
    c = one(render("--set", f"image.digest={digest}"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"sam2-service:0.1.0@{digest}"
    assert helm_template("--set", "image.digest=latest", check=False).returncode != 0


@pytest.mark.parametrize("persistence, appendonly, save", [
    ([], "no", "300 1"),                                                       # the default: snapshots
    (["--set", "redis.bundled.persistence.mode=appendonly"], "yes", ""),
    (["--set", "redis.bundled.persistence.enabled=false"], "no", ""),
])
def test_bundled_redis_command_runs_with_the_chosen_persistence_and_no_password_in_argv(
        persistence, appendonly, save, tmp_path):
    """The StatefulSet's command, run for real by sh and redis-server on loopback (only its data dir and
    address changed): the password works but is not on redis-server's command line."""
    import shutil
    import subprocess

    from tests.redis_server import _cli, _ping, free_port

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    docs = render("--set", "redis.mode=bundled", *persistence)
    container = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    script = container["command"][2].replace("--dir /data", f"--dir {tmp_path} --bind 127.0.0.1 --port {port}", 1)
    password = "pw-" + "x" * 29
    log = tmp_path / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*container["command"][:2], script], env={"PATH": "/usr/bin:/bin",
                                "REDIS_PASSWORD": password}, stdout=out, stderr=subprocess.STDOUT)
    try:
        _ping(port, password, proc=proc, log=log)
        argv = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode()  # exec: sh became redis-server
        assert "redis-server" in argv and password not in argv
        assert "NOAUTH" in subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True).stdout
        assert _cli(port, password, "CONFIG", "GET", "appendonly").split() == ["appendonly", appendonly]
        assert _cli(port, password, "CONFIG", "GET", "save").split("\n")[1] == save
        assert _cli(port, password, "CONFIG", "GET", "maxmemory-policy").split() == ["maxmemory-policy", "noeviction"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_bundled_redis_exports_metrics_to_its_own_job_when_asked():
    args = [*VARIANTS["ingress-bundled-redis"], "--set", "redis.bundled.metrics.enabled=true",
            "--set", "metrics.serviceMonitor.enabled=true"]
    manifests = helm_template(*args).stdout
    kubernetes_validate(manifests, "1.37")
    docs = load_yaml_docs(manifests)
    sts = one(docs, "StatefulSet")
    exporter = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}["metrics"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    assert exporter["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "sam2-sam2-service-redis"
    monitor = one(docs, "ServiceMonitor", "sam2-sam2-service-redis")
    assert {"targetLabel": "job", "replacement": "sam2-redis"} in monitor["spec"]["endpoints"][0]["relabelings"]
    scraped = [svc for svc in by_kind(docs, "Service")
               if monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
               and "metrics" in [p["name"] for p in svc["spec"]["ports"]]]
    assert [svc["metadata"]["name"] for svc in scraped] == ["sam2-sam2-service-redis"]  # not twice (headless)
    for r in validate_custom_resources([monitor]):
        assert r["status"] == "valid", r
    policy = one(docs, "NetworkPolicy", "sam2-sam2-service-redis")["spec"]["ingress"]
    assert [rule["ports"][0]["port"] for rule in policy] == ["redis", "metrics"]
    assert not [c for c in one(render(*VARIANTS["ingress-bundled-redis"]), "StatefulSet")["spec"]["template"]["spec"][
        "containers"] if c["name"] == "metrics"]


def test_dashboard_and_alerts_are_the_repository_files():
    docs = render("-f", PRODUCTION)
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["sam2-service.json"]) == json.loads(DASHBOARD.read_text())
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]


def test_notes_render_with_warnings_where_due():
    # `helm template` does not print NOTES.txt; a client-side dry-run install does
    proc = run([tool("helm"), "install", "sam2", CHART, "--dry-run=client", "--namespace", "sam2",
                "--set", "settings.weights=random"])
    assert "auth.enabled=false" in proc.stdout and "UNTRAINED" in proc.stdout and "port-forward" in proc.stdout
    proc = run([tool("helm"), "install", "sam2", CHART, "--dry-run=client", "--namespace", "sam2", "-f", PRODUCTION])
    assert "sam2.example.com/readyz" in proc.stdout and "WARNING" not in proc.stdout.split("NOTES:")[1]
