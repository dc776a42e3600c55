"""Writes helm/factmatch/values.schema.json from the project's Settings, so the chart's
``config`` accepts exactly the settings the code knows, with the same types and bounds.

    .venv/bin/python helm/gen_schema.py        (tests fail when the file is out of date)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.settings import Settings

SCHEMA_PATH = Path(__file__).resolve().parent / "factmatch" / "values.schema.json"
# Secrets never go through the ConfigMap: they come from existing Secrets (values.secrets).
SECRET_FIELDS = ("database_url", "kafka_sasl_password")


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k not in ("title", "format", "writeOnly")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def config_schema() -> dict[str, Any]:
    properties = {
        name: _clean(spec)
        for name, spec in Settings.model_json_schema()["properties"].items()
        if name not in SECRET_FIELDS
    }
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _secret_ref(*keys: str) -> dict[str, Any]:
    props: dict[str, Any] = {"existingSecret": {"type": "string"}}
    props.update({k: {"type": "string", "minLength": 1} for k in keys})
    return {"type": "object", "additionalProperties": False, "properties": props}


def _resources() -> dict[str, Any]:
    return {"type": "object", "properties": {"limits": {"type": "object"}, "requests": {"type": "object"}}}


def _gpu(shm: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "enabled": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 1},
        "resourceName": {"type": "string"},
    }
    if shm:  # the trainer's torchrun processes share memory through /dev/shm
        properties["shmSize"] = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([KMGT]i?)?$"}
    return {"type": "object", "additionalProperties": False, "properties": properties}


# Free-form maps the user fills with Kubernetes' own keys; every other object refuses unknown keys.
OPEN_MAPS = {
    "nodeSelector",
    "affinity",
    "annotations",
    "podAnnotations",
    "labels",
    "limits",
    "requests",
    "config",
    "podLabels",
    "podSecurityContext",
    "containerSecurityContext",
}


def _strict(node: Any, name: str = "") -> Any:
    """additionalProperties: false on every object with declared properties, except free-form maps."""
    if isinstance(node, dict):
        out = {
            k: (_strict(v, k) if k != "properties" else {p: _strict(s, p) for p, s in v.items()})
            for k, v in node.items()
        }
        if "properties" in out and "additionalProperties" not in out and name not in OPEN_MAPS:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v, name) for v in node]
    return node


def values_schema() -> dict[str, Any]:
    return _strict(_values_schema())


def _values_schema() -> dict[str, Any]:
    scheduling = {"nodeSelector": {"type": "object"}, "tolerations": {"type": "array"}, "affinity": {"type": "object"}}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "factmatch Helm values",
        "type": "object",
        "required": ["image", "config", "secrets", "worker"],
        "properties": {
            "nameOverride": {"type": "string"},
            "fullnameOverride": {"type": "string"},
            "image": {
                "type": "object",
                "required": ["repository"],
                "properties": {
                    "repository": {"type": "string", "minLength": 1},
                    "tag": {"type": "string"},
                    "digest": {"type": "string", "pattern": "^(|sha256:[a-f0-9]{64})$"},
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                },
            },
            "imagePullSecrets": {"type": "array"},
            "podSecurityContext": {"type": "object"},
            "containerSecurityContext": {"type": "object"},
            "podLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "priorityClassName": {"type": "string"},
            "runtimeClassName": {"type": "string"},
            "extraEnv": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            "extraVolumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            "extraVolumeMounts": {
                "type": "array",
                "items": {"type": "object", "required": ["name", "mountPath"]},
            },
            "serviceAccount": {
                "type": "object",
                "properties": {
                    "create": {"type": "boolean"},
                    "name": {"type": "string"},
                    "annotations": {"type": "object"},
                },
            },
            "config": config_schema(),
            "secrets": {
                "type": "object",
                "additionalProperties": False,
                "required": ["databaseUrl"],
                "properties": {
                    "databaseUrl": _secret_ref("key"),
                    "adminDatabaseUrl": _secret_ref("key"),
                    "kafkaSasl": _secret_ref("usernameKey", "passwordKey"),
                    "kafkaTls": _secret_ref("caKey"),
                },
            },
            "worker": {
                "type": "object",
                "required": ["replicas"],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0},
                    "resources": _resources(),
                    "gpu": _gpu(),
                    "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
                    "podAnnotations": {"type": "object"},
                    "podDisruptionBudget": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "maxUnavailable": {"type": ["integer", "string"]},
                        },
                    },
                    "startupFailureThreshold": {"type": "integer", "minimum": 1},
                    "progressDeadlineSeconds": {"type": "integer", "minimum": 60},
                    "topologySpreadConstraints": {"type": "array"},
                    **scheduling,
                },
            },
            "console": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "resources": _resources(),
                    "ingress": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "className": {"type": "string"},
                            "host": {"type": "string"},
                            "tlsSecret": {"type": "string"},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
            "autoscaling": {
                "type": "object",
                "properties": {
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 1},
                    "keda": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "lagThreshold": {"type": "integer", "minimum": 1},
                            "pollingInterval": {"type": "integer", "minimum": 1},
                            "authenticationRef": {"type": "string"},
                            "scaleDownStabilizationSeconds": {"type": "integer", "minimum": 0},
                        },
                    },
                    "hpa": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                    },
                },
            },
            "trainer": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "schedule": {"type": "string", "minLength": 9},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "resources": _resources(),
                    "gpu": _gpu(shm=True),
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "timeZone": {"type": "string", "minLength": 1},
                    "startingDeadlineSeconds": {"type": "integer", "minimum": 10},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 60},
                    **scheduling,
                },
            },
            "recalibration": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "schedule": {"type": "string", "minLength": 9},
                    "resources": _resources(),
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "timeZone": {"type": "string", "minLength": 1},
                    "startingDeadlineSeconds": {"type": "integer", "minimum": 10},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 60},
                    **scheduling,
                },
            },
            "migrations": {
                "type": "object",
                # waitSeconds + 60 (the Job's deadline) must stay within Helm's default 5-minute --timeout.
                "properties": {
                    "enabled": {"type": "boolean"},
                    "waitSeconds": {"type": "integer", "minimum": 0, "maximum": 230},
                },
            },
            "modelStore": {
                "type": "object",
                "properties": {
                    "existingClaim": {"type": "string"},
                    "size": {"type": "string"},
                    "storageClassName": {"type": "string"},
                    "accessModes": {"type": "array", "items": {"type": "string"}},
                },
            },
            "metrics": {
                "type": "object",
                "properties": {
                    "serviceMonitor": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "interval": {"type": "string"},
                            "labels": {"type": "object"},
                        },
                    },
                    "prometheusRule": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "labels": {"type": "object"},
                            "lagThreshold": {"type": "integer", "minimum": 1},
                            "deadLettersPerSecond": {"type": "number", "exclusiveMinimum": 0},
                            "annRecallMin": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                            "livePrecisionMinVerdicts": {"type": "integer", "minimum": 1},
                        },
                    },
                    "grafanaDashboard": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "label": {"type": "string", "minLength": 1},
                            "labelValue": {"type": "string"},
                            "annotations": {"type": "object"},
                        },
                    },
                },
            },
        },
    }


if __name__ == "__main__":
    SCHEMA_PATH.write_text(json.dumps(values_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
