"""``gekko train``, ``gekko eval``, ``gekko export`` and ``gekko models list``.

Kept out of ops/cli.py so the command file stays a table of contents. torch is imported only
inside train / eval (walk-forward) / export: ``gekko models list`` and ``gekko eval --model``
(which scores an exported ONNX model with onnxruntime) work on the runtime install alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from models.data import data_sha256
from models.registry import DEFAULT_ROOT, RegistryError, check_name, list_models, next_version
from ops.cli_common import load_config_or_exit, with_db

DEFAULT_SOURCE = "synthetic"


def _data_args(p: argparse.ArgumentParser) -> None:
    """Where the bars come from (train and eval)."""
    p.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="synthetic (the engine's market, from --config) | sine | random_walk | "
        "arch:sp500 | arch:nasdaq | tsd:btc15m | postgres[:RUN_ID] | a CSV/Parquet file",
    )
    p.add_argument(
        "--sim-seconds",
        type=float,
        default=1500.0,
        help="synthetic market: simulated seconds to record (default 1500)",
    )
    p.add_argument(
        "--bar-seconds",
        type=float,
        default=1.0,
        help="synthetic market / generators: bar length in seconds (default 1)",
    )
    p.add_argument("--bars", type=int, default=5000, help="sine / random_walk: bars (default 5000)")
    p.add_argument("--dsn", default="", help="postgres source: database (default: config)")


def _model_args(p: argparse.ArgumentParser) -> None:
    """The architecture and its training (train and eval)."""
    p.add_argument("--arch", choices=("nhits", "nbeatsx"), default="nhits")
    p.add_argument("--input-size", type=int, default=32, help="bars in the input window")
    p.add_argument("--horizon", type=int, default=4, help="bars forecast ahead")
    p.add_argument("--quantiles", default="0.1,0.5,0.9", help="comma-separated, in (0, 1)")
    p.add_argument("--scaler", choices=("robust", "standard"), default="robust")
    p.add_argument("--hidden", type=int, default=64, help="MLP width of every block")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5, help="early stopping patience (epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=3, help="walk-forward folds (0: no evaluation)")
    p.add_argument(
        "--season",
        type=int,
        default=0,
        help="seasonal naive season in bars (0: bars per day, or 5 for daily bars)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parsers(sub: argparse._SubParsersAction, with_config) -> None:
    """Register the model commands on the ``gekko`` sub-parser."""

    tr = with_config(sub.add_parser("train", help="train a forecasting model, export it to ONNX"))
    _data_args(tr)
    _model_args(tr)
    tr.add_argument("--name", default="default", help="model name in the registry")
    tr.add_argument("--version", default="", help="version (default: next v<N>)")
    tr.add_argument("--root", default=str(DEFAULT_ROOT), help="registry root (default var/models)")
    tr.add_argument("--out", default="", help="write the model to this directory instead")
    tr.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="do not keep model.pt (the torch weights `gekko export` re-exports)",
    )
    tr.add_argument(
        "--conformal",
        choices=("split", "none"),
        default="split",
        help="split: fit conformal offsets of the quantiles on the final fit's validation "
        "block, stored in meta.json and added by serving (default); none: raw bands",
    )
    tr.set_defaults(func=cmd_train)

    ev = with_config(sub.add_parser("eval", help="walk-forward evaluation against baselines"))
    _data_args(ev)
    _model_args(ev)
    ev.add_argument(
        "--model",
        default="",
        help="score this exported model directory (onnxruntime) on the last part of "
        "the data instead of retraining per fold",
    )
    ev.add_argument("--test-frac", type=float, default=0.4, help="share of windows tested")
    ev.add_argument(
        "--seeds",
        default="",
        help="comma-separated seeds: walk-forward once per seed, scores as mean ± spread "
        "(default: --seed alone)",
    )
    ev.add_argument(
        "--no-stat-baselines",
        action="store_true",
        help="leave out statsforecast's AutoARIMA / AutoETS / Theta (slow on long data)",
    )
    ev.add_argument("--json", default="", help="also write the report to this JSON file")
    ev.add_argument(
        "--html", default="", help="also write the report, calibration plot included, as HTML"
    )
    ev.set_defaults(func=cmd_eval)

    ex = with_config(
        sub.add_parser("export", help="re-export a trained model (model.pt) to ONNX, checked")
    )
    ex.add_argument("--model", required=True, help="model directory holding model.pt")
    ex.add_argument("--out", default="", help="ONNX path (default: <model>/model.onnx)")
    ex.set_defaults(func=cmd_export)

    mo = sub.add_parser("models", help="the model registry")
    mo_sub = mo.add_subparsers(dest="models_command", required=True)
    ls = with_config(mo_sub.add_parser("list", help="list model versions with their scores"))
    ls.add_argument("--root", default=str(DEFAULT_ROOT))
    ls.add_argument("--json", action="store_true")
    ls.add_argument(
        "--db", action="store_true", help="list what PostgreSQL holds (the config's database)"
    )
    ls.set_defaults(func=cmd_models_list)


def _err(msg: str) -> int:
    print(f"gekko: {msg}", file=sys.stderr)
    return 2


def _bars(args: argparse.Namespace):
    from ops.model_data import load_source

    cfg = None
    if args.source == "synthetic" or args.source.startswith("postgres"):
        cfg = load_config_or_exit(args.config)
    return load_source(
        args.source,
        cfg=cfg,
        sim_seconds=args.sim_seconds,
        bar_seconds=args.bar_seconds,
        n_bars=args.bars,
        seed=args.seed,
        dsn=args.dsn,
    )


def _train_config(args: argparse.Namespace):
    from models.train import TrainConfig

    return TrainConfig(
        architecture=args.arch,
        input_size=args.input_size,
        horizon=args.horizon,
        quantiles=tuple(float(q) for q in args.quantiles.split(",") if q.strip()),
        scaler=args.scaler,
        model={"hidden": args.hidden},
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
    )


def _data_name(args: argparse.Namespace) -> str:
    if args.source == "synthetic":
        return (
            f"synthetic market ({args.config}, {args.sim_seconds:g} s, {args.bar_seconds:g} s bars)"
        )
    if args.source in ("sine", "random_walk"):
        return f"{args.source} ({args.bars} bars, seed {args.seed})"
    return args.source


def _canonical_command(args: argparse.Namespace) -> str:
    """The full ``gekko train`` command with EVERY option spelled out (defaults included), so
    it reproduces the model even after a default changes."""
    skip = {"func", "command", "no_progress", "out", "root", "name", "version"}
    if args.source != "synthetic":
        skip |= {"config", "sim_seconds"}
    parts = ["gekko", "train"]
    for key, value in vars(args).items():
        if key in skip or value == "":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                parts.append(flag)
        else:
            parts += [flag, str(value)]
    from ops.secrets import redact  # --dsn's password must not reach meta.json / the registry

    return redact(shlex.join(parts))


def cmd_train(args: argparse.Namespace) -> int:
    try:
        cfg = _train_config(args)
        series = _bars(args)
    except (ValueError, FileNotFoundError) as exc:
        return _err(str(exc))
    from models.evaluate import format_report, walk_forward_eval
    from models.export import write_model_dir
    from models.features import FEATURES
    from models.input_drift import training_stats
    from models.train import fit

    progress = not args.no_progress
    name = _data_name(args)
    metrics: dict = {}
    try:
        if args.folds > 0:
            report = walk_forward_eval(
                series,
                cfg,
                folds=args.folds,
                season=args.season or None,
                data_name=name,
                progress=progress,
            )
            print(format_report(report))
            metrics = report.to_dict()
        parts = _final_windows(series, cfg)
        if not parts:
            return _err("no series is long enough for one window")
    except ValueError as exc:
        return _err(str(exc))
    import numpy as np

    def cat(i: int, part: str):
        return np.concatenate([p[i][slice(*getattr(p[2], part))] for p in parts])

    res = fit(
        cat(0, "train"),
        cat(1, "train"),
        cat(0, "val"),
        cat(1, "val"),
        cfg,
        progress=progress,
        desc="final model",
    )
    conformal = _train_offsets(res.model, cat(0, "val"), cat(1, "val"), cfg, args.conformal)
    # The synthetic market's bars are exactly --bar-seconds long, sub-second ones included (the
    # demo's 0.2 s bars): rounding to whole seconds would make infer serve the wrong bar length.
    bar_s = args.bar_seconds if args.source == "synthetic" else series[0].bar_seconds()
    try:
        out, version = _train_target(args)
    except RegistryError as exc:
        return _err(str(exc))
    meta = write_model_dir(
        out,
        name=args.name,
        version=version,
        cfg=cfg,
        result=res,
        bar_seconds=bar_s,
        data=name,
        data_sha256=data_sha256(series),
        metrics=metrics,
        command=_canonical_command(args),
        checkpoint=not args.no_checkpoint,
        feature_stats=training_stats(cat(0, "train")[:, -1, :], FEATURES),
        instruments=sorted({b.symbol for b in series}),
        conformal=conformal,
    )
    print(
        f"model {args.name} {version} -> {out}  ({meta['architecture']}, {res.epochs} epochs, "
        f"best {res.best_epoch}, train loss {res.train_loss:.4f}, val loss {res.val_loss:.4f}, "
        f"ONNX parity {meta['export']['parity_max_abs_diff']:.2g})"
    )
    _register(args, out, "train")
    return 0


def _train_offsets(model, x_val, y_val, cfg, how: str) -> dict | None:  # type: ignore[no-untyped-def]
    """meta.json's ``conformal`` entry: split offsets on the final fit's validation block (held
    out of the gradient steps; it only chose the epoch), or None for ``--conformal none``."""
    if how == "none":
        return None
    from models.conformal import fit_split
    from models.train import predict

    src = f"validation block of the final fit ({len(y_val)} windows)"
    return fit_split(y_val, predict(model, x_val)[1], cfg.quantiles, source=src).to_meta()


def _final_windows(series: list, cfg) -> list:  # type: ignore[no-untyped-def]
    """Per series long enough for one window: (x, y, its final train/val split)."""
    from models.data import final_split, make_windows

    parts = []
    for b in series:
        x, y = make_windows(b.features(), cfg.input_size, cfg.horizon)
        if len(x):
            parts.append((x, y, final_split(len(x), cfg.horizon)))
    return parts


def _train_target(args: argparse.Namespace) -> tuple[Path, str]:
    """Where ``gekko train`` writes the model and its version (``--out``, else the registry's
    next version); RegistryError for a bad name or version."""
    version = check_name("version", args.version) if args.version else None
    out = Path(args.out) if args.out else None
    if out is None:
        version = version or next_version(args.root, args.name)
        out = Path(args.root) / check_name("model name", args.name) / version
    return out, version or out.name


def _register(args: argparse.Namespace, model_dir: Path, action: str) -> None:
    """The model's row in PostgreSQL (after its files: they are the truth; a database that is
    off or down costs one line, never the exit status)."""
    from ops.store.model_registry import register_model_dir

    register_model_dir(args.config, model_dir, action)


def _stat_baselines(args: argparse.Namespace, notes: list[str]):  # type: ignore[no-untyped-def]
    """statsforecast's baselines, or None with the reason in ``notes``."""
    if args.no_stat_baselines:
        return None
    from models.stat_baselines import StatBaselines, missing

    why = missing()
    if why:
        notes.append(why)
        print(f"gekko: {why}", file=sys.stderr)
        return None
    return StatBaselines()


def _seeds(args: argparse.Namespace) -> list[int]:
    if not args.seeds.strip():
        return [args.seed]
    return [int(s) for s in args.seeds.split(",") if s.strip()]


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        series = _bars(args)
        seeds = _seeds(args)
    except (ValueError, FileNotFoundError) as exc:
        return _err(str(exc))
    notes: list[str] = []
    extra = _stat_baselines(args, notes)
    try:
        if args.model:
            reports = [_eval_model(args, series, extra)]
        else:
            from models.evaluate import walk_forward_eval

            reports = []
            for seed in seeds:
                args.seed = seed
                reports.append(
                    walk_forward_eval(
                        series,
                        _train_config(args),
                        folds=max(1, args.folds),
                        season=args.season or None,
                        test_frac=args.test_frac,
                        data_name=_data_name(args),
                        progress=not args.no_progress,
                        extra=extra,
                    )
                )
    except (ValueError, RegistryError) as exc:
        return _err(str(exc))
    for r in reports:
        r.notes += notes + (extra.notes() if extra is not None else [])
    _print_eval(args, reports)
    return 0


def _eval_model(args: argparse.Namespace, series: list, extra):  # type: ignore[no-untyped-def]
    """``gekko eval --model``: an exported model (onnxruntime), its stored offsets (fixed and
    adaptive serving) included."""
    import onnxruntime as ort

    from models.conformal import offsets_from_meta, residuals_from_meta
    from models.evaluate import evaluate_predictor
    from models.registry import read_meta, verify_onnx_hash

    meta = read_meta(args.model)
    verify_onnx_hash(args.model, meta)
    sess = ort.InferenceSession(
        str(Path(args.model) / "model.onnx"), providers=["CPUExecutionProvider"]
    )

    def predictor(x):
        return tuple(sess.run(["point", "quantiles"], {"x": x}))

    report = evaluate_predictor(
        predictor,
        series,
        int(meta["input_size"]),
        int(meta["horizon"]),
        meta["quantiles"],
        name=f"{meta['architecture']} {meta['version']}",
        season=args.season or None,
        test_frac=args.test_frac,
        data_name=_data_name(args),
        offsets=offsets_from_meta(meta, int(meta["horizon"]), meta["quantiles"]),
        extra=extra,
        residuals=residuals_from_meta(meta, int(meta["horizon"]), meta["quantiles"]),
    )
    if meta["training"].get("data_sha256") == data_sha256(series):
        print(
            "gekko: warning: this model was trained on exactly these bars: the scores "
            "below are IN-SAMPLE (use `gekko eval` without --model for walk-forward)",
            file=sys.stderr,
        )
    return report


def _print_eval(args: argparse.Namespace, reports: list) -> None:
    """Each seed's tables, the summary over seeds, and the --json / --html files."""
    from models.evaluate import format_report

    for r in reports:
        if len(reports) > 1:
            print(f"\n## seed {r.seed}")
        print(format_report(r))
    out: dict = reports[0].to_dict()
    summary = None
    if len(reports) > 1:
        from models.prob_eval import format_seeds, seed_summary_dict

        first = reports[0]
        names = list(dict.fromkeys([r.name for r in first.rows] + [p.name for p in first.prob]))
        summary = seed_summary_dict([r.to_dict() for r in reports], names)
        print("\n" + format_seeds(summary))
        out = {"seeds": [r.to_dict() for r in reports], "summary": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.html:
        from ops.eval_report import write

        print(f"report: {write(args.html, [r.to_dict() for r in reports], summary)}")


def cmd_export(args: argparse.Namespace) -> int:
    from models.export import ExportError, export_onnx, load_checkpoint
    from models.registry import file_sha256, read_meta, write_meta

    d = Path(args.model)
    ck = d / "model.pt"
    if not ck.exists():
        return _err(f"{ck}: no checkpoint (train without --no-checkpoint)")
    cfg, model = load_checkpoint(ck)
    out = Path(args.out) if args.out else d / "model.onnx"
    try:
        worst = export_onnx(model, out, cfg.input_size)
    except ExportError as exc:
        print(f"gekko: export failed: {exc}", file=sys.stderr)
        return 1
    if out.resolve() == (d / "model.onnx").resolve() and (d / "meta.json").exists():
        meta = read_meta(d)
        meta["onnx_sha256"] = file_sha256(out)
        meta.setdefault("export", {})["parity_max_abs_diff"] = worst
        write_meta(d, meta)
    print(
        f"exported {out} (dynamic batch; onnxruntime vs torch max diff {worst:.2g} at batch "
        f"1, 8, 64, 333)"
    )
    if out.resolve() == (d / "model.onnx").resolve() and (d / "meta.json").exists():
        _register(args, d, "export")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    if getattr(args, "db", False):
        from ops.store.model_registry import db_models

        got: list[dict] = []

        def fetch(conn) -> int:
            got.extend(db_models(conn))
            return 0

        rc = with_db(load_config_or_exit(args.config), fetch)
        if rc != 0:
            return rc
        return _print_models(got, args.json, "no models in PostgreSQL")
    return _print_models(list_models(args.root), args.json, f"no models under {args.root}")


def _print_models(rows: list[dict], as_json: bool, empty: str) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(empty)
        return 0
    print(
        f"{'name':<12} {'version':<8} {'arch':<8} {'L':>4} {'H':>3} {'bar s':>6} "
        f"{'MASE':>6} {'dir acc':>8}  created               path"
    )
    for r in rows:
        if "error" in r:
            print(
                f"{'?':<12} {'?':<8} {'?':<8} {'':>4} {'':>3} {'':>6} {'':>6} {'':>8}  "
                f"{'':<21} {r['path']}  ({r['error']})"
            )
            continue
        mase = f"{r['mase']:.3f}" if r["mase"] is not None else "-"
        da = f"{100 * r['dir_acc']:.1f}%" if r["dir_acc"] is not None else "-"
        print(
            f"{r['name']:<12} {r['version']:<8} {r['architecture']:<8} {r['input_size']:>4} "
            f"{r['horizon']:>3} {r['bar_seconds']:>6} {mase:>6} {da:>8}  {r['created']:<21} "
            f"{r['path']}"
        )
    return 0
