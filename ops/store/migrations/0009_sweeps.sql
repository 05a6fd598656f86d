-- Parameter sweeps (`gekko sweep`, ops/sweep*.py): one row per sweep with what it searched and
-- what it concluded (per window: the best trial, its deflated Sharpe ratio, the probability of
-- backtest overfitting; per walk-forward fold: in-sample beside out-of-sample), one row per
-- trial with its status — a failed, timed-out or invalid trial is a row too, with its error.
CREATE TABLE sweeps (
    sweep_id    bigserial PRIMARY KEY,
    engine_id   text NOT NULL,
    method      text NOT NULL,            -- grid | optuna
    objective   text NOT NULL,            -- the figure the search maximised
    settings    jsonb NOT NULL,           -- the [sweep] section and the windows
    summary     jsonb NOT NULL,           -- per window and per fold (docs/sweeps.md)
    config_text text NOT NULL,            -- the configuration swept (secrets masked)
    trials      integer NOT NULL,
    failed      integer NOT NULL,         -- trials not ok (failed, timeout, invalid)
    wall_s      double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sweep_trials (
    sweep_id      bigint NOT NULL REFERENCES sweeps (sweep_id) ON DELETE CASCADE,
    trial         integer NOT NULL,
    window_no     integer NOT NULL,
    role          text NOT NULL,          -- search | oos (a fold's best on the next window)
    fold          integer,                -- the walk-forward fold of an oos trial
    params        jsonb NOT NULL,
    status        text NOT NULL,          -- ok | invalid | failed | timeout
    error         text NOT NULL DEFAULT '',
    objective     double precision,
    net_pnl       double precision,
    sharpe        double precision,       -- per equity sample period
    sharpe_annual double precision,       -- only when the window is long enough to annualise
    max_drawdown  double precision,
    turnover      double precision,       -- traded notional / starting equity
    fills         integer,
    metrics       jsonb NOT NULL,         -- every figure of the trial
    wall_s        double precision NOT NULL,
    PRIMARY KEY (sweep_id, trial)
);
