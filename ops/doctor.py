"""``gekko doctor``: is this host set up for low-latency running? Each check says what to change.

Why: a pinned spin loop on a core the kernel also schedules other work on, a CPU that clocks
down between ticks, a khugepaged compaction stall or a slow clock source cost more latency than
anything in the engine's code, and none of them shows in the engine's own figures as a cause.
The checks read the kernel's own files under a root path (``/`` on a real host; tests pass a
fake ``sys``/``proc`` tree), so each one is testable without the machine it describes.

Each check gives ok / warn / fail and, unless ok, the change to make. ``fail`` means the engine
will not run as configured (a pinned CPU that does not exist, /dev/shm too small for the rings);
the command exits 1 only then. docs/deployment.md explains each check.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ops.shm_need import PAGE, ShmNeed, mib, shm_need

OK, WARN, FAIL = "ok", "warn", "fail"
#: processes on the trading path: they should own isolated cores
HOT = ("feed", "strategy", "risk", "exec", "infer")
GOOD_CLOCKSOURCES = ("tsc", "arch_sys_counter", "kvm-clock", "hyperv_clocksource_tsc_page")
NOFILE_WANTED = 65536


@dataclass
class Check:
    name: str
    level: str  # ok | warn | fail
    detail: str  # what was found
    fix: str = ""  # what to change (empty when ok)


def parse_cpu_list(text: str) -> set[int]:
    """The kernel's CPU list format: ``"0-3,8,10-11"`` (empty: none)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def cpu_list(cpus: set[int] | list[int]) -> str:
    """The inverse of ``parse_cpu_list`` (ranges joined), for messages and kernel arguments."""
    s = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        runs.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(runs)


def _adjtimex_state() -> tuple[bool | None, int]:
    """(synchronised?, estimated error in µs) from the kernel (adjtimex, read-only: no privilege
    needed, and it answers for the host inside a container); (None, 0) where unavailable."""
    if not sys.platform.startswith("linux"):
        return None, 0

    class Timex(ctypes.Structure):
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("_rest", ctypes.c_byte * 256),  # the rest of struct timex: unread
        ]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None, 0
    if state < 0:
        return None, 0
    sta_unsync = 0x0040
    return state != 5 and not tx.status & sta_unsync, int(tx.esterror)  # 5: TIME_ERROR


class Host:
    """The host as its kernel files describe it, under ``root``; two probes that are no files
    (free space of a filesystem, the kernel clock's sync state) can be replaced for tests."""

    def __init__(
        self,
        root: str | Path = "/",
        statvfs: Callable[[str], Any] = os.statvfs,
        clock_sync: Callable[[], tuple[bool | None, int]] = _adjtimex_state,
    ) -> None:
        self.root = Path(root)
        self.statvfs = statvfs
        self.clock_sync = clock_sync

    def read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text()
        except OSError:
            return None

    def cpus(self, rel: str) -> set[int] | None:
        text = self.read(rel)
        return None if text is None else parse_cpu_list(text)

    def status_field(self, key: str) -> str | None:
        for line in (self.read("proc/self/status") or "").splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
        return None

    def limit(self, title: str) -> tuple[str, str] | None:
        """(soft, hard) of a /proc/self/limits row (``"Max open files"``)."""
        for line in (self.read("proc/self/limits") or "").splitlines():
            if line.startswith(title):
                parts = line[len(title) :].split()
                if len(parts) >= 2:
                    return parts[0], parts[1]
        return None

    def mount(self, target: str) -> tuple[str, dict[str, str]] | None:
        """(fstype, options) of the LAST mount on ``target`` (the one in effect)."""
        found = None
        for line in (self.read("proc/self/mounts") or "").splitlines():
            f = line.split()
            if len(f) >= 4 and f[1] == target:
                opts = dict(o.partition("=")[::2] for o in f[3].split(","))
                found = (f[2], opts)
        return found


def _pinned(cfg: Any) -> dict[str, list[int]]:
    """Process name -> its configured cpus, for the processes that run with this config."""
    from procs.runtime import enabled_workers

    out = {}
    for name in enabled_workers(cfg):
        p = getattr(cfg.processes, name, None)
        if p is not None:
            out[name] = list(p.cpus)
    return out


def check_cpus(host: Host, cfg: Any) -> list[Check]:
    """Configured cpus exist and are allowed; the trading path's sit on isolated cores."""
    online = host.cpus("sys/devices/system/cpu/online")
    allowed = host.status_field("Cpus_allowed_list")
    allowed_set = parse_cpu_list(allowed) if allowed else online
    isolated = host.cpus("sys/devices/system/cpu/isolated") or set()
    pinned = _pinned(cfg)
    wanted = {c for cs in pinned.values() for c in cs}
    out: list[Check] = []
    missing = wanted - (allowed_set if allowed_set is not None else wanted)
    if missing:
        level = FAIL if cfg.supervisor.pin_strict else WARN
        out.append(
            Check(
                "cpus",
                level,
                f"config pins to CPUs {cpu_list(missing)}, which this process may not use "
                f"(allowed: {cpu_list(allowed_set or set())})",
                "pin to CPUs this host/container has ([processes.*] cpus), or give the "
                "container those CPUs (Kubernetes: integer CPU requests = limits, static CPU "
                "manager; docker: --cpuset-cpus)",
            )
        )
    hot = {n: c for n, c in pinned.items() if n in HOT}
    unpinned = sorted(n for n, c in hot.items() if not c)
    if unpinned:
        out.append(
            Check(
                "isolated cores",
                WARN,
                f"not pinned: {', '.join(unpinned)}",
                "give each trading process its own core: [processes.<name>] cpus = [N] "
                '(with wait = "spin" for the lowest latency)',
            )
        )
    shared = sorted(n for n, c in hot.items() if c and not set(c) <= isolated)
    if shared:
        cores = cpu_list({c for n in shared for c in hot[n]})
        out.append(
            Check(
                "isolated cores",
                WARN,
                f"{', '.join(shared)} pinned to CPUs {cores} that the kernel also schedules "
                f"other work on (isolated: {cpu_list(isolated) or 'none'})",
                f"boot with isolcpus={cores} nohz_full={cores} rcu_nocbs={cores} "
                "(kernel command line), or pin to the isolated ones",
            )
        )
    if not out:
        detail = (
            f"trading processes on isolated CPUs {cpu_list({c for cs in hot.values() for c in cs})}"
            if hot
            else "no trading process runs with this config"
        )
        out.append(Check("isolated cores", OK, detail))
    return out


def check_governor(host: Host, cfg: Any) -> Check:
    cpus = {c for cs in _pinned(cfg).values() for c in cs} or (
        host.cpus("sys/devices/system/cpu/online") or set()
    )
    slow = {}
    seen = 0
    for c in sorted(cpus):
        gov = host.read(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor")
        if gov is None:
            continue
        seen += 1
        if gov.strip() != "performance":
            slow[c] = gov.strip()
    if not seen:
        return Check("cpu governor", OK, "no cpufreq control exposed (fixed frequency or a VM)")
    if slow:
        govs = ", ".join(sorted(set(slow.values())))
        return Check(
            "cpu governor",
            WARN,
            f"CPUs {cpu_list(set(slow))} run the {govs} governor: they clock down between ticks",
            "cpupower frequency-set -g performance (or write performance to "
            "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor at boot)",
        )
    return Check("cpu governor", OK, f"performance on CPUs {cpu_list(cpus)}")


def _selected(text: str | None) -> str | None:
    """The bracketed choice of a sysfs selector (``always [madvise] never`` -> madvise)."""
    if text is None:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return text.strip() or None


def check_thp(host: Host) -> Check:
    mode = _selected(host.read("sys/kernel/mm/transparent_hugepage/enabled"))
    if mode is None:
        return Check("transparent huge pages", OK, "not present in this kernel")
    if mode == "always":
        return Check(
            "transparent huge pages",
            WARN,
            "enabled = always: khugepaged compaction can stall a hot loop for milliseconds",
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled "
            "(or transparent_hugepage=madvise on the kernel command line)",
        )
    return Check("transparent huge pages", OK, f"enabled = {mode}")


def shm_size(host: Host) -> tuple[int, int] | None:
    """(size, free) of /dev/shm in bytes; size from the mount's ``size=`` where it has one."""
    m = host.mount("/dev/shm")
    if m is None:
        return None
    try:
        st = host.statvfs(str(host.root / "dev/shm"))
        size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError:
        size = free = 0
    opt = m[1].get("size", "")
    if opt:
        units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
        mult = units.get(opt[-1].lower(), 1)
        digits = opt[:-1] if opt[-1].lower() in units else opt
        if digits.isdigit():
            size = int(digits) * mult
            free = min(free, size) if free else size
    return size, free


def check_shm(host: Host, cfg: Any, need: ShmNeed, own_bytes: int = 0) -> Check:
    """/dev/shm holds the rings; ``own_bytes`` is what this engine id already holds there (a
    running engine's regions are part of the need, not competition for it)."""
    found = shm_size(host)
    rings = ", ".join(need.ring_lines())
    what = f"this config needs {mib(need.total)} (rings: {rings}; tables, metrics, semaphores)"
    fix = (
        f"size /dev/shm to {mib(need.recommended)} at least: mount -o remount,size="
        f"{need.recommended // (1 << 20)}m /dev/shm; docker --shm-size; Kubernetes: an "
        "emptyDir medium Memory at /dev/shm (docs/deployment.md)"
    )
    if found is None:
        return Check("/dev/shm", FAIL, f"/dev/shm is not mounted; {what}", fix)
    size, free = found
    if size < need.total:
        return Check("/dev/shm", FAIL, f"/dev/shm is {mib(size)}; {what}", fix)
    if free + own_bytes < need.total:
        return Check(
            "/dev/shm",
            FAIL,
            f"/dev/shm has {mib(free)} free of {mib(size)}; {what}",
            "free /dev/shm (another engine or a crashed run's gk_* regions; `ls -l /dev/shm`) "
            "or " + fix,
        )
    if size < need.recommended:
        return Check("/dev/shm", WARN, f"/dev/shm is {mib(size)}; {what}", fix)
    return Check("/dev/shm", OK, f"{mib(size)} ({mib(free)} free); {what}")


def check_clocksource(host: Host) -> Check:
    cs = host.read("sys/devices/system/clocksource/clocksource0/current_clocksource")
    if cs is None:
        return Check("clock source", OK, "not exposed by this kernel")
    cs = cs.strip()
    if cs in GOOD_CLOCKSOURCES:
        return Check("clock source", OK, f"{cs} (clock_gettime in the vDSO, tens of ns)")
    avail = (
        host.read("sys/devices/system/clocksource/clocksource0/available_clocksource") or ""
    ).split()
    better = next((c for c in GOOD_CLOCKSOURCES if c in avail), "tsc")
    return Check(
        "clock source",
        WARN,
        f"{cs}: every timestamp (ts_recv, each latency stage) costs a slow clock read",
        f"echo {better} > /sys/devices/system/clocksource/clocksource0/current_clocksource "
        f"(or clocksource={better} tsc=reliable on the kernel command line)",
    )


def check_ntp(host: Host) -> Check:
    synced, esterror_us = host.clock_sync()
    if synced is None:
        return Check("NTP sync", OK, "the kernel's sync state cannot be read on this OS")
    if not synced:
        return Check(
            "NTP sync",
            WARN,
            "the system clock is not synchronised: venue timestamps and ours disagree, and "
            "staleness checks against venue time (ts_event) drift",
            "run chrony or systemd-timesyncd (chronyc tracking / timedatectl show that it syncs)",
        )
    return Check("NTP sync", OK, f"synchronised (estimated error {esterror_us} µs)")


def check_nofile(host: Host) -> Check:
    lim = host.limit("Max open files")
    if lim is None:
        return Check("open-file limit", OK, "not readable on this OS")
    soft = lim[0]
    if soft != "unlimited" and int(soft) < NOFILE_WANTED:
        return Check(
            "open-file limit",
            WARN,
            f"soft limit {soft} (hard {lim[1]}): each venue, database pool and client takes "
            "descriptors, and running out is an error mid-run",
            f"LimitNOFILE={NOFILE_WANTED} (ops/deploy/systemd/gekko.service sets it), "
            f"ulimit -n {NOFILE_WANTED}, or docker --ulimit nofile={NOFILE_WANTED}",
        )
    return Check("open-file limit", OK, f"soft limit {soft}")


def check_swap(host: Host) -> Check:
    lines = (host.read("proc/swaps") or "").strip().splitlines()[1:]
    if lines:
        return Check(
            "swap",
            WARN,
            f"{len(lines)} swap area(s) on: ring pages in /dev/shm and the processes' memory "
            "can be swapped out, and a page fault in a hot loop costs milliseconds",
            "swapoff -a (and remove the swap from /etc/fstab) on a trading host, or "
            "vm.swappiness=0",
        )
    return Check("swap", OK, "no swap")


def own_shm_bytes(host: Host, engine_id: str) -> int:
    """What this engine id holds in /dev/shm now (a running engine's regions and semaphores)."""
    total = 0
    d = host.root / "dev/shm"
    for prefix in (f"gk_{engine_id}_", f"sem.gk_{engine_id}_"):
        for p in d.glob(prefix + "*") if d.is_dir() else ():
            with contextlib.suppress(OSError):  # removed while we listed it
                total += (p.stat().st_size + PAGE - 1) // PAGE * PAGE
    return total


def run_checks(cfg: Any, host: Host | None = None) -> list[Check]:
    host = host or Host()
    need = shm_need(cfg)
    out = check_cpus(host, cfg)
    out += [
        check_governor(host, cfg),
        check_thp(host),
        check_shm(host, cfg, need, own_shm_bytes(host, cfg.engine.id)),
        check_clocksource(host),
        check_ntp(host),
        check_nofile(host),
        check_swap(host),
    ]
    return out


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.level.upper():<4}  {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"      change: {c.fix}")
    n = {lv: sum(c.level == lv for c in checks) for lv in (OK, WARN, FAIL)}
    lines.append(f"{n[OK]} ok, {n[WARN]} warn, {n[FAIL]} fail")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ops.cli_common import load_config_or_exit

    cfg = load_config_or_exit(args.config)
    checks = run_checks(cfg, Host(args.root))
    if args.json:
        need = shm_need(cfg)
        print(
            json.dumps(
                {
                    "engine": cfg.engine.id,
                    "checks": [asdict(c) for c in checks],
                    "shm_need_bytes": need.total,
                    "shm_recommended_bytes": need.recommended,
                }
            )
        )
    else:
        print(format_checks(checks))
    return 1 if any(c.level == FAIL for c in checks) else 0


def add_parsers(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    p = with_config(
        sub.add_parser("doctor", help="check this host for low-latency running; what to change")
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)  # a fake /sys, /proc (tests)
    p.set_defaults(func=cmd_doctor)
