-- What a run's HTML report needs beyond the trading rows (ops/report_data.py): the run's
-- closing summary (analytics, P&L per strategy, counts), its equity curve with every
-- instrument's mark at each point, its latency histograms and the configuration it ran with
-- (secrets masked). Fills and risk events come from their own tables. Written once by the
-- supervisor after the run stops; `gekko report RUN_ID` reads it back.
CREATE TABLE run_reports (
    run_id      bigint PRIMARY KEY,
    engine_id   text NOT NULL,
    summary     jsonb NOT NULL,
    equity      jsonb NOT NULL,
    latency     jsonb NOT NULL,
    strategies  jsonb NOT NULL,
    config_text text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
