"""The deployment files, checked as far as this machine allows: compose.yaml and the Kubernetes
manifests structurally (services, images, ports, mounted files that exist, Guaranteed QoS,
/dev/shm sized from the rings), the Dockerfile's stages, the systemd unit with
`systemd-analyze verify`, and an image build where a container engine answers."""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.config import load_config
from ops.shm_need import mib, shm_need
from tests.conftest import ROOT

yaml = pytest.importorskip("yaml")

DEPLOY = ROOT / "ops" / "deploy"
K8S = DEPLOY / "k8s"
ENV = {
    "GEKKO_PG_DSN": "postgresql://gekko:pw-for-tests@postgres:5432/gekko",
    "GEKKO_REDIS_URL": "redis://redis:6379/0",
}
SERVICES = {"gekko", "postgres", "redis", "prometheus", "grafana"}


def container_cfg(monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return load_config(DEPLOY / "gekko.toml")


def size_bytes(text: str) -> int:
    """A compose size ("64m", "1g") or a Kubernetes quantity ("64Mi", "4Gi") in bytes."""
    m = re.fullmatch(r"(\d+)\s*([kmgKMG]i?|[bB])?", str(text).strip())
    assert m, f"not a size: {text!r}"
    unit = (m.group(2) or "b").lower().rstrip("i")
    return int(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def stated_need(text: str) -> set[str]:
    """The "need N MiB" figures a deployment file's comments state."""
    return set(re.findall(r"needs?\s+(\d+\.\d MiB)", text.replace("\n#", " ")))


def metrics_port(cfg: Any) -> int:
    return int(cfg.metrics.listen.rpartition(":")[2])


# --- the container config -------------------------------------------------------------------------
def test_container_config_loads_with_dsn_and_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = container_cfg(monkeypatch)
    assert cfg.storage.postgres.mode == ENV["GEKKO_PG_DSN"]
    assert cfg.storage.redis.mode == ENV["GEKKO_REDIS_URL"]
    assert cfg.metrics.listen == "0.0.0.0:9464"  # reachable from Prometheus' container
    assert cfg.inference.enabled and cfg.inference.providers == ["cpu"]
    assert Path(cfg.engine.var_dir).is_absolute()


# --- compose.yaml -------------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_services_images_ports_and_mounted_files() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == SERVICES
    assert services["gekko"]["build"] == "." and (ROOT / "Dockerfile").is_file()
    for name, svc in services.items():
        assert svc.get("image"), f"{name}: no image"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published off-host"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts {src}, which is not in the repo"
            else:
                assert src in doc["volumes"], f"{name}: volume {src} is not declared"
    gekko = services["gekko"]
    assert set(gekko["depends_on"]) == {"postgres", "redis"}
    env = gekko["environment"]
    assert "@postgres:5432/" in env["GEKKO_PG_DSN"] and "redis://redis:" in env["GEKKO_REDIS_URL"]
    assert gekko["ulimits"]["nofile"] >= 65536
    assert gekko["init"] is True  # the supervisor is not PID 1 (signals, orphans)
    assert int(gekko["stop_grace_period"].rstrip("s")) > 10  # > shutdown_timeout_s
    dashboards = ROOT / "ops/deploy/grafana/dashboards"
    assert list(dashboards.glob("*.json")), "no Grafana dashboard to provision"


def test_compose_shm_is_sized_for_the_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    need = shm_need(container_cfg(monkeypatch))
    gekko = compose()["services"]["gekko"]
    assert size_bytes(gekko["shm_size"]) >= need.recommended
    assert stated_need((ROOT / "compose.yaml").read_text()) == {mib(need.total)}
    assert stated_need((DEPLOY / "gekko.toml").read_text()) == {mib(need.total)}


def test_prometheus_scrapes_gekko_and_grafana_reads_prometheus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A's scrape config and provisioning agree with the compose services and mounts."""
    port = metrics_port(container_cfg(monkeypatch))
    assert str(port) in compose()["services"]["gekko"]["expose"]
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = [
        t
        for job in prom["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert f"gekko:{port}" in targets
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert any(d.get("url", "").rstrip("/") == "http://prometheus:9090" for d in ds["datasources"])
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/gekko.yaml").read_text())
    paths = {p["options"]["path"] for p in prov["providers"]}
    mounts = {
        v.split(":")[1]
        for v in compose()["services"]["grafana"]["volumes"]
        if v.startswith("./ops/deploy/grafana/dashboards")
    }
    assert paths & mounts, f"grafana reads dashboards from {paths}, compose mounts them at {mounts}"
    home = Path(
        compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    )
    assert str(home.parent) in mounts and (DEPLOY / "grafana/dashboards" / home.name).is_file()


# --- Kubernetes -------------------------------------------------------------------------------
def k8s_docs() -> dict[str, dict[str, Any]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for res in kust["resources"]:
        for doc in yaml.safe_load_all((K8S / res).read_text()):
            out[doc["kind"]] = doc
    return out


def test_k8s_statefulset_is_guaranteed_with_integer_cpus_and_a_sized_shm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = container_cfg(monkeypatch)
    need = shm_need(cfg)
    docs = k8s_docs()
    assert {"StatefulSet", "Service", "ConfigMap"} <= set(docs)
    sts = docs["StatefulSet"]
    assert (
        sts["spec"]["replicas"] == 1
        and sts["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    )
    pod = sts["spec"]["template"]
    assert docs["Service"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    for c in pod["spec"]["containers"]:
        res = c["resources"]
        assert res["requests"] == res["limits"], f"{c['name']}: not Guaranteed QoS"
        cpu = str(res["limits"]["cpu"])
        assert cpu.isdigit() and int(cpu) >= 1, f"{c['name']}: cpu {cpu} is not an integer"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    main = pod["spec"]["containers"][0]
    shm_mount = next(m for m in main["volumeMounts"] if m["mountPath"] == "/dev/shm")
    shm = volumes[shm_mount["name"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert size_bytes(shm["sizeLimit"]) >= need.recommended
    assert size_bytes(main["resources"]["limits"]["memory"]) > size_bytes(shm["sizeLimit"])
    assert stated_need((K8S / "statefulset.yaml").read_text()) == {mib(need.total)}
    ann = pod["metadata"]["annotations"]
    port = metrics_port(cfg)
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(port)
    assert {"name": "metrics", "containerPort": port} in main["ports"]
    assert "kill" in main["lifecycle"]["preStop"]["exec"]["command"]  # the kill switch on stop
    assert pod["spec"]["terminationGracePeriodSeconds"] > cfg.supervisor.shutdown_timeout_s
    assert pod["spec"]["shareProcessNamespace"] is True  # the supervisor is not PID 1


def test_k8s_secrets_configmap_and_mounts(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = k8s_docs()
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    main = pod["containers"][0]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in main["env"]}
    assert set(refs) == set(ENV), "the DSN and URL come from the Secret"
    for ref in refs.values():
        assert ref["name"] == example["metadata"]["name"] and ref["key"] in example["stringData"]
    # the ConfigMap carries ops/deploy/gekko.toml unchanged, mounted where the args read it
    cm = docs["ConfigMap"]
    assert cm["data"]["config.toml"] == (DEPLOY / "gekko.toml").read_text()
    config_vol = next(v["name"] for v in pod["volumes"] if "configMap" in v)
    mount = next(m for m in main["volumeMounts"] if m["name"] == config_vol)
    assert main["args"][main["args"].index("--config") + 1] == f"{mount['mountPath']}/config.toml"
    data = next(
        m
        for m in main["volumeMounts"]
        if m["mountPath"] == container_cfg(monkeypatch).engine.var_dir
    )
    assert data["name"] in {
        t["metadata"]["name"] for t in docs["StatefulSet"]["spec"]["volumeClaimTemplates"]
    }


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders() -> None:
    r = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(r.stdout)}
    assert kinds == {"ConfigMap", "Service", "StatefulSet"}


# --- Dockerfile ---------------------------------------------------------------------------------
def dockerfile_stages() -> list[tuple[str, list[str]]]:
    """(stage name, its instructions) in order; continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            stages.append((m.group(1) or str(len(stages)), []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def test_dockerfile_is_multi_stage_with_a_slim_runtime_that_runs_gekko() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    (build, build_lines), (_, run_lines) = stages[0], stages[-1]
    installs = [ln for ln in build_lines if "pip install" in ln]
    assert installs and all("[" not in ln.split("pip install")[1].split("&&")[0] for ln in installs)
    assert not any("pip install" in ln or "torch" in ln.lower() for ln in run_lines)
    assert any(ln.startswith(f"COPY --from={build}") for ln in run_lines)
    assert "slim" in (ROOT / "Dockerfile").read_text().split("AS runtime")[0].splitlines()[-1]
    entry = next(ln for ln in run_lines if ln.startswith("ENTRYPOINT"))
    cmd = next(ln for ln in run_lines if ln.startswith("CMD"))
    assert '"gekko"' in entry and '"run"' in cmd
    config_path = cmd.split('"--config", "')[1].split('"')[0]
    assert any(ln.endswith(f"ops/deploy/gekko.toml {config_path}") for ln in run_lines)


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignored = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    sources = []
    for _, lines in dockerfile_stages():
        for ln in lines:
            if ln.startswith("COPY") and "--from" not in ln:
                sources += ln.split()[1:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repo"
        hit = [p for p in ignored if fnmatch.fnmatch(src, p) or src.startswith(p.rstrip("/") + "/")]
        assert not hit, f".dockerignore drops {src} ({hit})"
    for heavy in (".venv", "var", ".git", "tests"):
        assert heavy in ignored


#: need torch: `gekko train` / `gekko export` run them on a machine with the [train] extra
TRAINING_ONLY = {"models.net", "models.nhits", "models.nbeatsx", "models.train", "models.export"}
_IMPORT_ALL = """
import importlib, pkgutil, sys
bad = []
for pkg in ("engine", "procs", "shm", "models", "ops"):
    for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
        if m.name not in set(sys.argv[1:]):
            try:
                importlib.import_module(m.name)
            except ImportError as exc:
                bad.append(f"{m.name}: {exc}")
print("\\n".join(bad))
"""


def test_every_runtime_module_imports_without_the_test_and_train_extras(tmp_path: Path) -> None:
    """What the image lacks (torch, onnx, scipy, ...: tests/test_doctor.py's ``not_in_image``)
    made unimportable: every module but the training ones still imports."""
    from tests.test_doctor import not_in_image

    for mod in not_in_image():
        (tmp_path / mod).mkdir()
        (tmp_path / mod / "__init__.py").write_text(f"raise ImportError('{mod}: not in the image')")
    r = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *sorted(TRAINING_ONLY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
    )
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr[-2000:]


def _docker_answers() -> str:
    if shutil.which("docker") is None:
        return "no docker client"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    return (
        ""
        if r.returncode == 0
        else f"no container engine answers `docker info`: {r.stderr.strip()[-200:]}"
    )


@pytest.mark.timeout(1800)
def test_image_builds_without_torch_and_runs_gekko() -> None:
    why = _docker_answers()
    if why:
        pytest.skip(why)
    tag = "gekko:test-deploy"
    r = subprocess.run(
        ["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1700
    )
    assert r.returncode == 0, r.stderr[-4000:]
    try:
        r = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", "import torch"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode != 0 and "torch" in r.stderr
        r = subprocess.run(
            ["docker", "run", "--rm", *(f"-e{k}={v}" for k, v in ENV.items()), tag, "doctor"]
            + ["--config", "/etc/gekko/config.toml"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "/dev/shm" in r.stdout, r.stderr[-2000:]
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)


# --- systemd ------------------------------------------------------------------------------------
UNIT = DEPLOY / "systemd" / "gekko.service"


def unit() -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_systemd_unit_pins_limits_restarts_and_kills_on_stop() -> None:
    svc = unit()["Service"]
    assert svc["CPUAffinity"].strip()
    assert svc["LimitMEMLOCK"] == "infinity"
    assert int(svc["LimitNOFILE"]) >= 65536
    assert svc["Restart"] == "on-failure"
    assert " run " in svc["ExecStart"] + " " and svc["ExecStart"].split()[0].endswith("/gekko")
    stop = svc["ExecStop"].lstrip("-")
    assert stop.split()[0] == svc["ExecStart"].split()[0] and stop.split()[1] == "kill"
    config = svc["ExecStart"].split("--config")[1].split()[0]
    assert f"--config {config}" in stop  # the same engine
    assert int(svc["TimeoutStopSec"]) > 10 and svc["KillMode"] == "mixed"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified in a root holding the system's unit files and a stand-in executable at the
    unit's path (verify refuses a unit whose ExecStart does not exist)."""
    system_units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if system_units is None:
        pytest.skip("no systemd unit directory on this host")
    exe = Path(unit()["Service"]["ExecStart"].split()[0])
    stand_in = tmp_path / exe.relative_to("/")
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    shutil.copytree(system_units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system/gekko.service")
    r = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", "gekko.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
