"""platform/cluster/: the cloud launcher config passes Ray's own validation, and every cluster
file starts nodes with token authentication and keeps the dashboard off public interfaces."""

from __future__ import annotations

import yaml
from conftest import REPO

CLUSTER = REPO / "platform" / "cluster"


def test_the_aws_config_passes_rays_validation_and_runs_this_package_on_gpu_workers():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    validate_config(config)
    validate_config(prepare_config(config))  # as `ray up` fills it in
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert workers and all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)  # GPU types
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any("pip install" in c and "ncsn-search" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/ncsn-search"] == "."
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if c.startswith("RAY"))
    assert "/shared" in " ".join(config["setup_commands"])  # storage every node mounts


def test_the_rayjob_runs_a_search_with_token_auth_in_every_pod_and_gpu_workers():
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["entrypoint"].startswith("python platform/run_search.py --space ")
    assert "--address auto" in job["spec"]["entrypoint"] and "--storage-path /shared/" in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    pods = [job["spec"]["submitterPodTemplate"], cluster["headGroupSpec"]["template"]]
    pods += [group["template"] for group in cluster["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
    for group in cluster["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
            assert {"mountPath": "/shared", "name": "runs"} in container["volumeMounts"]


def test_the_start_scripts_turn_token_authentication_on_and_bind_the_dashboard_to_loopback():
    head = (CLUSTER / "start-head.sh").read_text()
    join = (CLUSTER / "join.sh").read_text()
    assert "export RAY_AUTH_MODE=token" in head and "export RAY_AUTH_MODE=token" in join
    assert "ray start --head --dashboard-host=127.0.0.1" in head
