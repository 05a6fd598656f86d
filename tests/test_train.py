"""Training and evaluation behave: a learnable signal is learned and beats the baselines, a
random walk is not claimed to be predictable, training is reproducible, the commands work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.data import final_split, generated_bars, make_windows  # noqa: E402
from models.evaluate import default_season, score, walk_forward_eval, wilson  # noqa: E402
from models.train import TrainConfig, fit  # noqa: E402

SMALL = {"hidden": 32}


def _cfg(arch: str = "nhits", **kw) -> TrainConfig:
    base = dict(architecture=arch, input_size=24, horizon=2, model=SMALL, epochs=12, patience=3)
    base.update(kw)
    return TrainConfig(**base)


def _split(kind: str, n: int, seed: int, cfg: TrainConfig):
    b = generated_bars(kind, n, seed=seed)
    x, y = make_windows(b.features(), cfg.input_size, cfg.horizon)
    f = final_split(len(x), cfg.horizon)
    return x[slice(*f.train)], y[slice(*f.train)], x[slice(*f.val)], y[slice(*f.val)]


@pytest.mark.parametrize("arch", ["nhits", "nbeatsx"])
def test_a_sine_plus_noise_is_learned_and_beats_every_baseline(arch):
    cfg = _cfg(arch)
    rep = walk_forward_eval([generated_bars("sine", 1600, seed=5)], cfg, folds=2, season=24)
    rows = {r.name: r for r in rep.rows}
    model = rows[arch]
    assert model.n == rows["random walk"].n > 500
    assert model.mase < 0.8  # the noise alone is ~0.6 of the random walk's error here
    for name in ("random walk", "seasonal naive", "moving average", "train mean"):
        assert model.mae < 0.85 * rows[name].mae, name
    assert model.ci_low > 0.65  # the direction of the cycle is called, with confidence
    assert rep.coverage is not None and 0.6 < rep.coverage < 0.95  # nominal 0.8
    assert len(rep.gaps) == 2 and all(g.train_loss > 0 and g.val_loss > 0 for g in rep.gaps)


def test_a_random_walk_is_not_claimed_to_be_predictable():
    cfg = _cfg("nhits")
    rep = walk_forward_eval([generated_bars("random_walk", 1600, seed=6)], cfg, folds=2)
    rows = {r.name: r for r in rep.rows}
    model, rw = rows["nhits"], rows["random walk"]
    assert model.mase > 0.97 * rw.mase  # no real improvement over "no change"
    assert model.ci_low < 0.5 < model.ci_high  # direction: a coin flip, and the CI says so
    assert rw.dir_acc is None  # the random walk calls no direction at all


def test_training_is_reproducible_and_early_stopping_restores_the_best_epoch():
    cfg = _cfg("nbeatsx", epochs=30, patience=2)
    data = _split("random_walk", 900, 2, cfg)
    a = fit(*data, cfg)
    b = fit(*data, cfg)
    c = fit(*data, _cfg("nbeatsx", epochs=30, patience=2, seed=1))
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history == b.history
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert a.epochs < 30  # nothing to learn: the validation loss stops improving early
    best_val = min(v for _, v in a.history)
    assert a.history[a.best_epoch - 1][1] == best_val
    assert a.val_loss == pytest.approx(best_val, rel=1e-6)  # the best weights were restored


def test_metrics_and_interval():
    lo, hi = wilson(60, 100)
    assert lo < 0.6 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    y = np.array([[0.01, -0.02], [-0.01, 0.0], [0.02, 0.01]], np.float32)
    perfect = score("p", y.copy(), y, np.full(3, 0.01))
    assert perfect.mae == 0 and perfect.smape == pytest.approx(0.0, abs=1e-9)
    assert perfect.dir_acc == 1.0 and perfect.n_dir == 3
    zero = score("z", np.zeros_like(y), y, np.full(3, 0.01))
    assert zero.dir_acc is None and zero.mase == pytest.approx(np.abs(y).mean() / 0.01, rel=1e-5)
    assert default_season(86_400, 100) == 5
    assert default_season(900, 1000) == 96 and default_season(900, 100) == 1


def _no_record_config(tmp_path, mode="off"):
    """The repository's config with var/ under tmp_path and no database (or the test's):
    these commands must not start (or register toy models in) the checkout's embedded
    PostgreSQL; registration in PostgreSQL has its own tests (tests/test_audit_models.py)."""
    text = (Path(__file__).resolve().parents[1] / "config.toml").read_text()
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    at = text.index("[storage.postgres]")
    at = text.index('mode = "embedded"', at)
    text = text[:at] + f'mode = "{mode}"' + text[at + len('mode = "embedded"') :]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_the_model_commands_end_to_end(tmp_path, capsys):
    from ops.cli import main

    root = tmp_path / "reg"
    args = [
        "--config",
        _no_record_config(tmp_path),
        "--source",
        "sine",
        "--bars",
        "700",
        "--input-size",
        "16",
        "--horizon",
        "2",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--folds",
        "2",
        "--no-progress",
    ]
    assert main(["train", *args, "--root", str(root), "--name", "toy"]) == 0
    assert main(["train", *args, "--root", str(root), "--name", "toy", "--arch", "nbeatsx"]) == 0
    out = capsys.readouterr().out
    assert "| nhits" in out and "| random walk" in out and "fold 2: train loss" in out
    meta = json.loads((root / "toy" / "v2" / "meta.json").read_text())
    assert meta["architecture"] == "nbeatsx" and meta["version"] == "v2"
    cmd = meta["training"]["command"]
    assert cmd.startswith("gekko train") and "--arch nbeatsx" in cmd and "--seed 0" in cmd
    assert len(meta["training"]["data_sha256"]) == 64
    assert {r["name"] for r in meta["metrics"]["table"]} >= {"nbeatsx", "random walk"}
    assert main(["models", "list", "--root", str(root)]) == 0
    listing = capsys.readouterr().out
    assert "toy" in listing and "v1" in listing and "v2" in listing
    assert (
        main(
            [
                "eval",
                "--source",
                "sine",
                "--bars",
                "700",
                "--model",
                str(root / "toy" / "v1"),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["table"][0]["name"] == "nhits v1"
    assert "IN-SAMPLE" in capsys.readouterr().err  # same bars it was trained on: said so
    before = meta["onnx_sha256"]
    assert main(["export", "--config", args[1], "--model", str(root / "toy" / "v2")]) == 0
    after = json.loads((root / "toy" / "v2" / "meta.json").read_text())["onnx_sha256"]
    assert before == after  # same weights, same graph
    # bad input: a clear message and exit code 2, not a traceback
    assert main(["train", "--source", "nowhere", "--root", str(root)]) == 2
    assert main(["eval", "--source", "sine", "--model", str(tmp_path)]) == 2
    assert "unknown data source" in capsys.readouterr().err


def test_synthetic_market_bars_are_the_infer_process_bars():
    """Bars from the engine's market: one series per instrument, 1 s apart, OHLC of the mid."""
    from engine.messages import Quote
    from ops.config import load_config
    from ops.model_data import synthetic_market_bars
    from procs.build import build_market

    cfg = load_config("config.toml")
    series = synthetic_market_bars(cfg, 8.0, 1.0)
    assert [s.symbol for s in series] == [i.symbol for i in cfg.instruments]
    s0 = series[0]
    assert 6 <= len(s0) <= 8 and np.all(np.diff(s0.ts_ns) == 1_000_000_000)
    # independent check of the first full bar: the last mid of instrument 1 in [1 s, 2 s)
    iid = cfg.instruments[0].instrument_id
    last_mid, lo, hi = None, np.inf, -np.inf
    for msg in build_market(cfg):
        if msg.ts_event >= 2_000_000_000:
            break
        if isinstance(msg, Quote) and msg.instrument_id == iid and msg.ts_event >= 1_000_000_000:
            last_mid = (msg.bid_px + msg.ask_px) * 0.5
            lo, hi = min(lo, last_mid), max(hi, last_mid)
    k = int(np.flatnonzero(s0.ts_ns == 1_000_000_000)[0])
    assert s0.close[k] == last_mid and s0.low[k] == lo and s0.high[k] == hi


def test_bars_recorded_in_postgres_are_a_training_source(pg_dsn, tmp_path):
    """The recorder's ``bars`` table (real PostgreSQL): one series per instrument, a run filter,
    and ``gekko train --source postgres:<run>`` trains on it."""
    import psycopg

    from ops.cli import main
    from ops.model_data import postgres_bars
    from ops.store.migrate import migrate

    with psycopg.connect(pg_dsn) as conn:
        migrate(conn)
        conn.execute("CREATE TABLE bars_any PARTITION OF bars DEFAULT")
        gen = generated_bars("sine", 400, seed=9)
        rows = []
        for run in (1, 2):
            for iid in (1, 2):
                for k in range(len(gen) if run == 1 else 10):
                    px = [
                        int(round(v * 100))
                        for v in (gen.open[k], gen.high[k], gen.low[k], gen.close[k])
                    ]
                    rows.append(
                        (
                            run,
                            iid,
                            int(gen.ts_ns[k]),
                            int(gen.ts_ns[k]) + 60 * 10**9,
                            *px,
                            int(gen.volume[k]),
                            3,
                        )
                    )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bars VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows
            )
        conn.commit()
    one = postgres_bars(pg_dsn, run_id=2, symbols={1: "AAPL"})
    assert [(s.symbol, len(s)) for s in one] == [("AAPL", 10), ("2", 10)]
    both = postgres_bars(pg_dsn)
    assert [len(s) for s in both] == [400, 400]  # run 2 repeats run 1's first bars: counted once
    s = both[0]
    assert s.bar_seconds() == 60 and np.array_equal(s.ts_ns, gen.ts_ns)
    assert np.allclose(s.close, np.round(gen.close * 100))
    with pytest.raises(ValueError, match="no bars"):
        postgres_bars(pg_dsn, run_id=7)
    out = tmp_path / "pgmodel"
    argv = [
        "train",
        "--config",
        _no_record_config(tmp_path, pg_dsn),  # the record is the test's database too
        "--source",
        "postgres:1",
        "--dsn",
        pg_dsn,
        "--input-size",
        "16",
        "--horizon",
        "2",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--folds",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["bar_seconds"] == 60 and meta["training"]["data"] == "postgres:1"
    with psycopg.connect(pg_dsn) as conn:  # registered in the config's record
        (n,) = conn.execute(
            "SELECT count(*) FROM models WHERE name = %s AND version = %s",
            (meta["name"], meta["version"]),
        ).fetchone()
    assert n == 1
