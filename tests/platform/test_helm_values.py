"""The Kubernetes deployment's Helm values: where each chart reads them, with the keys it knows.

Zero to JupyterHub validates its values against a JSON schema when Helm renders the chart, but Helm and the
chart cannot be fetched here (no registry serves them).  The schema below is the part of the chart's values
reference that latentsky's files use (Zero to JupyterHub 4.x, https://z2jh.jupyter.org/en/stable/resources/
reference.html), closed with ``additionalProperties: false`` where the chart's own schema is closed, so a key
in the wrong place (``hub:`` at the top of daskhub's values, which that chart ignores), a misspelt key or a
KubeSpawner setting that does not exist fails here as Helm would fail, or, worse, silently ignore it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

DEPLOY = Path(__file__).resolve().parents[2] / "binder" / "jupyterhub"

_obj = {"type": "object"}
_quantity = {"type": ["string", "number"]}
#: KubeSpawner settings a profile may override (kubespawner_override), from KubeSpawner's traits.
KUBESPAWNER_OVERRIDES = {
    "cpu_limit",
    "cpu_guarantee",
    "mem_limit",
    "mem_guarantee",
    "environment",
    "image",
    "image_pull_policy",
    "extra_resource_limits",
    "extra_resource_guarantees",
    "node_selector",
    "tolerations",
    "volumes",
    "volume_mounts",
    "default_url",
    "start_timeout",
    "cmd",
    "extra_labels",
    "extra_annotations",
    "lifecycle_hooks",
    "init_containers",
}
PROFILE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["display_name"],
    "properties": {
        "display_name": {"type": "string"},
        "slug": {"type": "string"},
        "description": {"type": "string"},
        "default": {"type": "boolean"},
        "profile_options": _obj,
        "kubespawner_override": {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: {} for k in KUBESPAWNER_OVERRIDES},
        },
    },
}
Z2JH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "fullnameOverride": {},
        "nameOverride": {},
        "enabled": {},
        "imagePullSecret": _obj,
        "imagePullSecrets": {},
        "custom": _obj,
        "proxy": _obj,
        "ingress": _obj,
        "rbac": _obj,
        "global": _obj,
        "debug": _obj,
        "hub": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "config": _obj,
                "extraConfig": {"type": "object", "additionalProperties": {"type": "string"}},
                "extraEnv": {},
                "services": _obj,
                "image": _obj,
                "resources": _obj,
                "db": _obj,
                "cookieSecret": {},
                "networkPolicy": _obj,
                "allowNamedServers": {"type": "boolean"},
                "loadRoles": _obj,
            },
        },
        "singleuser": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "image": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "tag": {"type": "string"},
                        "pullPolicy": {},
                        "pullSecrets": {},
                    },
                },
                "defaultUrl": {"type": "string"},
                "startTimeout": {"type": "integer"},
                "cpu": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"limit": {"type": "number"}, "guarantee": {"type": "number"}},
                },
                "memory": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"limit": _quantity, "guarantee": _quantity},
                },
                "extraEnv": {"type": "object"},
                "cmd": {},
                "uid": {},
                "fsGid": {},
                "networkPolicy": _obj,
                "storage": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["dynamic", "static", "none"]},
                        "capacity": {"type": "string"},
                        "homeMountPath": {"type": "string"},
                        "dynamic": _obj,
                        "static": _obj,
                        "extraVolumes": {"type": ["array", "object"]},
                        "extraVolumeMounts": {"type": ["array", "object"]},
                        "extraLabels": _obj,
                    },
                },
                "profileList": {"type": "array", "items": PROFILE},
                "lifecycleHooks": _obj,
                "initContainers": {},
                "extraContainers": {},
                "extraFiles": _obj,
                "nodeSelector": _obj,
                "extraLabels": _obj,
                "extraAnnotations": _obj,
                "extraPodConfig": _obj,
                "extraResource": _obj,
                "extraTolerations": {},
                "serviceAccountName": {},
                "cloudMetadata": _obj,
            },
        },
        "prePuller": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "hook": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
                "continuous": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
                "pullProfileListImages": {"type": "boolean"},
                "extraImages": _obj,
                "pause": _obj,
                "resources": _obj,
                "extraTolerations": {},
                "containerSecurityContext": _obj,
                "annotations": _obj,
                "labels": _obj,
                "priorityClassName": {},
                "revisionHistoryLimit": {},
            },
        },
        "scheduling": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "userScheduler": {
                    "type": "object",
                    "properties": {"enabled": {"type": "boolean"}, "replicas": {"type": "integer"}},
                },
                "userPlaceholder": {
                    "type": "object",
                    "properties": {"enabled": {"type": "boolean"}, "replicas": {"type": "integer"}},
                },
                "podPriority": _obj,
                "corePods": _obj,
                "userPods": _obj,
            },
        },
        "cull": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "timeout": {"type": "integer"},
                "every": {"type": "integer"},
                "users": {"type": "boolean"},
                "adminUsers": {"type": "boolean"},
                "maxAge": {"type": "integer"},
                "removeNamedServers": {"type": "boolean"},
                "concurrency": {"type": "integer"},
            },
        },
    },
}
#: The daskhub chart: JupyterHub's values under `jupyterhub:`, Dask Gateway's under `dask-gateway:`.
DASKHUB = {
    "type": "object",
    "additionalProperties": False,
    "required": ["jupyterhub", "dask-gateway"],
    "properties": {"jupyterhub": Z2JH, "dask-gateway": _obj, "rbac": _obj},
}


def _values(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_jupyterhub_chart_values_have_the_keys_the_chart_reads():
    jsonschema.validate(_values("config.yaml"), Z2JH)


def test_daskhub_values_nest_jupyterhub_under_its_key_and_equal_config_yaml():
    values = _values("dask/daskhub-values.yaml")
    jsonschema.validate(values, DASKHUB)
    assert values["jupyterhub"] == _values("config.yaml"), "dask/daskhub-values.yaml and config.yaml differ"


def test_a_misplaced_key_is_refused():
    """The check itself: daskhub values with JupyterHub's keys at the top, as they were, fail."""
    values = _values("config.yaml")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "dask-gateway": {}}, DASKHUB)
    broken = yaml.safe_load(yaml.safe_dump(values))
    broken["singleuser"]["profileList"][0]["kubespawner_override"]["memory_limit"] = "2G"
    with pytest.raises(jsonschema.ValidationError, match="memory_limit"):
        jsonschema.validate(broken, Z2JH)


def _bytes(quantity: str) -> float:
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit in sorted(units, key=len, reverse=True):
        if str(quantity).endswith(unit):
            return float(str(quantity)[: -len(unit)]) * units[unit]
    return float(quantity)


def test_profiles_offer_the_course_at_2_gb_and_analysis_at_8_gb_with_dask_gateway():
    single = _values("config.yaml")["singleuser"]
    profiles = single["profileList"]
    course, analysis = profiles
    assert course.get("default") is True and _bytes(course["kubespawner_override"]["mem_limit"]) == 2e9
    assert _bytes(analysis["kubespawner_override"]["mem_limit"]) == 8e9 and "Dask Gateway" in analysis["display_name"]
    assert _bytes(single["memory"]["limit"]) == _bytes(course["kubespawner_override"]["mem_limit"])
    # the shared data are mounted read-only; the image's results are opened read-only by binder/start
    assert all(m["readOnly"] for m in single["storage"]["extraVolumeMounts"])
    # a 4 GB image: pulled ahead of users, and a start time that allows a pull
    values = _values("config.yaml")
    assert values["prePuller"]["hook"]["enabled"] and values["prePuller"]["continuous"]["enabled"]
    assert single["startTimeout"] >= 300


def test_gateway_client_names_no_release():
    """The scheduler proxy's address holds the Helm release and namespace: the chart sets it, not this file."""
    text = (DEPLOY / "dask" / "gateway.yaml").read_text()
    gateway = yaml.safe_load(text)["gateway"]
    assert "proxy-address" not in gateway and "traefik-" not in text
