"""``make fuzz``: every fuzz target under atheris (libFuzzer, coverage-guided), one at a time.

    python -m tests.fuzz.run_atheris [--seconds N] [--out DIR] [TARGET ...]

Each target runs in its own process (libFuzzer exits when it is done) for ``--seconds``, seeded
from its kept corpus (``tests/fuzz/corpus/<target>``, read only) with new inputs written under
``<out>/<target>/corpus``. A crash (an exception that is not the target's refusal), a hang
(``-timeout``: one input over 10 s) or an allocation beyond ``-rss_limit_mb`` /
``-malloc_limit_mb`` leaves its input in ``<out>/<target>/`` (``crash-*``, ``timeout-*``,
``oom-*``); the run goes on with the next target and exits 1 at the end if any failed. Replay a
finding with ``python -m tests.fuzz.run_atheris TARGET -- <that file>``; keep it as
``tests/fuzz/corpus/<target>/regress-<what>`` with a test beside the fix.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# the project's modules are instrumented for coverage; third-party ones (ccxt, pyarrow) are not
INSTRUMENT = ["engine", "procs", "ops", "models", "shm", "tests.fuzz"]


def _numba_modules() -> list[str]:
    """The project's modules with numba kernels: numba cannot compile instrumented bytecode,
    so these are imported before instrumenting (and fuzzed uninstrumented)."""
    root = Path(__file__).resolve().parents[2]
    out = []
    for pkg in ("engine", "procs", "shm", "ops", "models"):
        for p in sorted((root / pkg).rglob("*.py")):
            text = p.read_text(encoding="utf-8")
            if "import numba" in text or "from numba" in text:
                out.append(".".join(p.relative_to(root).with_suffix("").parts))
    return out


def _one(name: str, libfuzzer_args: list[str]) -> None:
    """Run one target under atheris in this process (never returns)."""
    import importlib

    import atheris

    for mod in _numba_modules():
        importlib.import_module(mod)
    with atheris.instrument_imports(include=INSTRUMENT):
        from tests.fuzz import targets

        target = targets()[name]
        for seed in target.corpus():  # imports what the target uses, instrumented
            target(seed)
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help="target names (default: all)")
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    ap.add_argument("--out", default="var/fuzz", help="new corpus entries and findings")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child: run this target
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, rest = ap.parse_args(argv[:cut]), argv[cut + 1 :]  # after "--": libFuzzer's
    if args.one:
        _one(args.one, rest)
        return 0
    from tests.fuzz import CORPUS, targets

    names = args.targets or sorted(targets())
    unknown = sorted(set(names) - set(targets()))
    if unknown:
        ap.error(f"unknown target(s) {unknown}; known: {sorted(targets())}")
    failed: list[str] = []
    for name in names:
        out = Path(args.out) / name
        work = out / "corpus"
        work.mkdir(parents=True, exist_ok=True)
        lf = [
            f"-max_total_time={args.seconds}",
            "-timeout=10",
            "-rss_limit_mb=3072",
            "-malloc_limit_mb=1024",
            f"-artifact_prefix={out}/",
            "-print_final_stats=1",
        ]
        paths = rest or [str(work), str(CORPUS / name)]
        print(f"== fuzz {name}: {args.seconds}s", flush=True)
        cmd = [sys.executable, "-m", "tests.fuzz.run_atheris", "--one", name, "--", *lf, *paths]
        rc = subprocess.call(cmd)
        if rc:
            failed.append(name)
            print(f"== fuzz {name}: FAILED (exit {rc}); the input is under {out}/", flush=True)
    if failed:
        print(f"fuzz: {len(failed)} target(s) failed: {', '.join(failed)}", flush=True)
        return 1
    print(f"fuzz: {len(names)} targets, {args.seconds}s each, nothing found", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
