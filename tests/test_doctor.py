"""`gekko doctor`: each check against fake /sys and /proc trees (a tuned host, an untuned one),
and once for real, beside a running engine whose /dev/shm use must equal what doctor computes."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ops import doctor
from ops.cli import main as gekko_main
from ops.config import load_config
from ops.shm_need import PAGE, mib, shm_need
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

HOT_PINS = {"feed": [2], "strategy": [3], "risk": [4], "exec": [5], "infer": [6]}


def config(pins: dict[str, list[int]] | None = None, strict: bool = True):  # type: ignore[no-untyped-def]
    procs = {name: {"cpus": cpus} for name, cpus in (pins or {}).items()}
    overlay = {"processes": procs, "supervisor": {"pin_strict": strict}}
    return load_config(ROOT / "config.toml", overlay=overlay)


def fake_host(
    root: Path,
    *,
    ncpu: int = 8,
    isolated: str = "2-7",
    governor: str | None = "performance",
    thp: str = "always [madvise] never",
    shm: str = "size=262144k",
    clocksource: str = "tsc",
    nofile: str = "1048576",
    swaps: list[str] = (),  # type: ignore[assignment]
    synced: bool | None = True,
) -> doctor.Host:
    """A host tree under ``root``: what its kernel files would say."""

    def put(rel: str, text: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    cpu = "sys/devices/system/cpu"
    put(f"{cpu}/online", f"0-{ncpu - 1}\n")
    put(f"{cpu}/isolated", isolated + "\n")
    for c in range(ncpu):
        if governor is not None:
            put(f"{cpu}/cpu{c}/cpufreq/scaling_governor", governor + "\n")
    put("sys/kernel/mm/transparent_hugepage/enabled", thp + "\n")
    put("sys/devices/system/clocksource/clocksource0/current_clocksource", clocksource + "\n")
    put("sys/devices/system/clocksource/clocksource0/available_clocksource", "tsc hpet acpi_pm\n")
    put("proc/self/status", f"Name:\tgekko\nCpus_allowed_list:\t0-{ncpu - 1}\n")
    put(
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        f"Max open files            {nofile:<20} 1048576              files     \n",
    )
    mounts = "proc /proc proc rw 0 0\n"
    if shm:
        mounts += f"tmpfs /dev/shm tmpfs rw,nosuid,nodev,{shm} 0 0\n"
    put("proc/self/mounts", mounts)
    put("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n" + "".join(s + "\n" for s in swaps))
    (root / "dev/shm").mkdir(parents=True, exist_ok=True)
    big = SimpleNamespace(f_blocks=1 << 20, f_frsize=4096, f_bavail=1 << 20)
    return doctor.Host(root, statvfs=lambda _p: big, clock_sync=lambda: (synced, 120))


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    out: dict[str, doctor.Check] = {}
    for c in checks:
        if c.name not in out or c.level == doctor.FAIL:
            out[c.name] = c
    return out


def test_a_tuned_host_passes_every_check(tmp_path: Path) -> None:
    checks = doctor.run_checks(config(HOT_PINS), fake_host(tmp_path))
    assert {c.level for c in checks} == {doctor.OK}, doctor.format_checks(checks)
    assert "isolated CPUs 2-6" in by_name(checks)["isolated cores"].detail


def test_an_untuned_host_gets_what_to_change(tmp_path: Path) -> None:
    host = fake_host(
        tmp_path,
        isolated="",
        governor="powersave",
        thp="[always] madvise never",
        shm="size=32m",
        clocksource="hpet",
        nofile="1024",
        swaps=["/swapfile file 1048572 0 -2"],
        synced=False,
    )
    checks = by_name(doctor.run_checks(config(HOT_PINS), host))
    need = shm_need(config(HOT_PINS))
    expect_warn = {
        "isolated cores": "isolcpus=2-6 nohz_full=2-6",
        "cpu governor": "frequency-set -g performance",
        "transparent huge pages": "madvise",
        "/dev/shm": f"{need.recommended // (1 << 20)}m",  # 32 MiB holds 9.6: a warning
        "clock source": "clocksource=tsc",
        "NTP sync": "chrony",
        "open-file limit": "LimitNOFILE=65536",
        "swap": "swapoff",
    }
    for name, fix in expect_warn.items():
        assert checks[name].level == doctor.WARN, checks[name]
        assert fix in checks[name].fix, checks[name]
    assert "powersave" in checks["cpu governor"].detail
    assert mib(need.total) in checks["/dev/shm"].detail


def test_failures_are_what_stops_the_engine(tmp_path: Path) -> None:
    cfg = config({**HOT_PINS, "exec": [11]})  # a CPU this 8-CPU host lacks, pin_strict
    checks = by_name(doctor.run_checks(cfg, fake_host(tmp_path, shm="size=8m")))
    assert checks["cpus"].level == doctor.FAIL and "11" in checks["cpus"].detail
    shm = checks["/dev/shm"]
    assert shm.level == doctor.FAIL and "8.0 MiB" in shm.detail, shm  # the rings need 9.6
    # not strict: the same pin is a warning (the worker runs unpinned)
    loose = by_name(doctor.run_checks(config({"exec": [11]}, strict=False), fake_host(tmp_path)))
    assert loose["cpus"].level == doctor.WARN
    # no /dev/shm at all
    gone = by_name(doctor.run_checks(cfg, fake_host(tmp_path / "b", shm="")))
    assert gone["/dev/shm"].level == doctor.FAIL and "not mounted" in gone["/dev/shm"].detail


def test_shm_already_used_by_this_engine_is_not_counted_against_it(tmp_path: Path) -> None:
    cfg = config()
    need = shm_need(cfg)
    host = fake_host(tmp_path)
    nearly_full = SimpleNamespace(f_blocks=1 << 20, f_frsize=4096, f_bavail=PAGE // 4096)
    host.statvfs = lambda _p: nearly_full
    assert doctor.check_shm(host, cfg, need).level == doctor.FAIL  # someone else's: no room
    assert doctor.check_shm(host, cfg, need, own_bytes=need.total).level == doctor.OK


def test_unpinned_trading_processes_are_a_warning(tmp_path: Path) -> None:
    checks = by_name(doctor.run_checks(config(), fake_host(tmp_path)))
    assert checks["isolated cores"].level == doctor.WARN
    assert "feed" in checks["isolated cores"].detail


def test_cli_json_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_host(tmp_path / "good")
    fake_host(tmp_path / "bad", shm="size=4m")
    cfg = str(ROOT / "config.toml")
    assert gekko_main(["doctor", "--config", cfg, "--root", str(tmp_path / "good")]) == 0
    text = capsys.readouterr().out
    assert "/dev/shm" in text and "0 fail" in text
    rc = gekko_main(["doctor", "--config", cfg, "--json", "--root", str(tmp_path / "bad")])
    assert rc == 1
    out = json.loads(capsys.readouterr().out)
    assert out["shm_need_bytes"] == shm_need(load_config(cfg)).total
    shm = next(c for c in out["checks"] if c["name"] == "/dev/shm")
    assert shm["level"] == "fail" and shm["fix"]


def test_cpu_lists_round_trip() -> None:
    assert doctor.parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert doctor.cpu_list({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    assert doctor.parse_cpu_list("") == set()


# --- for real: this host, with the container's config running ------------------------------------
def _dist(req: str) -> str:
    return re.split(r"[ <>=!;\[~(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(reqs: list[str]) -> set[str]:
    """Distributions ``reqs`` install, with what they depend on (extras of theirs aside)."""
    seen: set[str] = set()
    stack = list(reqs)
    while stack:
        name = _dist(stack.pop())
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(md.PackageNotFoundError):  # a platform's optional dependency
            stack += [r for r in md.requires(name) or [] if "extra ==" not in r]
    return seen


def not_in_image() -> list[str]:
    """The modules of what the [test] and [train] extras install and the runtime dependencies
    do not (torch, onnx, scipy, ...): the image's `pip install .` leaves them out."""
    reqs = md.requires("gekko") or []
    runtime = _closure([r for r in reqs if "extra ==" not in r])
    extras = _closure([r.split(";")[0] for r in reqs if re.search(r'extra == "(test|train)"', r)])
    absent = extras - runtime
    return sorted(
        mod
        for mod, dists in md.packages_distributions().items()
        if mod.isidentifier() and mod != "tests" and any(_dist(d) in absent for d in dists)
    )


def container_config(tmp_path: Path, eid: str) -> Path:
    """ops/deploy/gekko.toml as the image runs it, but private (id, var dir, loopback exporter
    on a free port) and without the external services (no PostgreSQL record, no Redis user)."""
    text = (ROOT / "ops/deploy/gekko.toml").read_text()
    for old, new in (
        ('id = "gekko"', f'id = "{eid}"'),
        ('var_dir = "/var/lib/gekko"', f'var_dir = "{tmp_path / "var"}"'),
        ('listen = "0.0.0.0:9464"', 'listen = "127.0.0.1:0"'),
        ('mode = "${GEKKO_PG_DSN}"', 'mode = "off"'),
        ('mode = "${GEKKO_REDIS_URL}"', 'mode = "embedded"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def shm_held(eid: str) -> tuple[int, int]:
    """(bytes of this engine's regions, number of its semaphores) in /dev/shm, whole pages."""
    d = Path("/dev/shm")
    regions = sum((p.stat().st_size + PAGE - 1) // PAGE * PAGE for p in d.glob(f"gk_{eid}_*"))
    return regions, len(list(d.glob(f"sem.gk_{eid}_*")))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this OS (Linux only)")
def test_doctor_for_real_beside_the_container_config_running_without_torch(
    tmp_path: Path, engine_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_engine_e2e import wait_ready

    cfg = container_config(tmp_path, engine_id)
    shadow = tmp_path / "not-in-image"
    hidden = not_in_image()
    assert {"torch", "onnx", "scipy", "yaml"} <= set(hidden)
    for mod in hidden:
        (shadow / mod).mkdir(parents=True)
        (shadow / mod / "__init__.py").write_text(f"raise ImportError('{mod}: not in the image')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--duration", "60"],
        cwd=tmp_path,  # as in the image: not the checkout
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_ready(cfg, engine_id, proc=proc), proc.communicate(timeout=30)[1][-3000:]
        need = shm_need(load_config(cfg))
        regions, sems = shm_held(engine_id)
        assert regions == need.region_bytes, (regions, need.regions)
        assert 0 < sems <= need.semaphores
        rc = gekko_main(["doctor", "--config", str(cfg), "--json"])
        out = json.loads(capsys.readouterr().out)
        levels = {c["name"]: c["level"] for c in out["checks"]}
        assert rc == (1 if "fail" in levels.values() else 0)
        assert levels["/dev/shm"] != "fail"  # the engine runs in it: its regions count as its own
        shm = next(c for c in out["checks"] if c["name"] == "/dev/shm")
        assert mib(need.total) in shm["detail"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert "not in the image" not in err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
