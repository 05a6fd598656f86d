-- Gekko system of record, version 1.
-- Prices and quantities are int64 tick / lot counts as on the rings; times are int64 ns.
-- Every trading row carries run_id (one `gekko run`): client order ids and venue fill ids are
-- unique within a run, and recovery reads back the current run only.

CREATE TABLE runs (
    run_id      bigint PRIMARY KEY,
    engine_id   text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    config_path text NOT NULL DEFAULT ''
);

CREATE TABLE instruments (
    instrument_id integer PRIMARY KEY,
    symbol        text NOT NULL,
    venue         text NOT NULL,
    asset_class   text NOT NULL,
    sector        text NOT NULL,
    tick_size     double precision NOT NULL,
    lot_size      double precision NOT NULL,
    currency      text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- market data: partitioned by day of ts_event (ns since the epoch); the writer creates each
-- day's partition before its first COPY into it
CREATE TABLE quotes (
    run_id        bigint NOT NULL,
    instrument_id integer NOT NULL,
    bid_px        bigint NOT NULL,
    bid_qty       bigint NOT NULL,
    ask_px        bigint NOT NULL,
    ask_qty       bigint NOT NULL,
    ts_event      bigint NOT NULL,
    ts_recv       bigint NOT NULL,
    seq           bigint NOT NULL
) PARTITION BY RANGE (ts_event);
CREATE INDEX ON quotes (instrument_id, ts_event);

CREATE TABLE trades (
    run_id        bigint NOT NULL,
    instrument_id integer NOT NULL,
    px            bigint NOT NULL,
    qty           bigint NOT NULL,
    side          smallint NOT NULL,
    ts_event      bigint NOT NULL,
    ts_recv       bigint NOT NULL,
    trade_id      bigint NOT NULL
) PARTITION BY RANGE (ts_event);
CREATE INDEX ON trades (instrument_id, ts_event);

CREATE TABLE bars (
    run_id        bigint NOT NULL,
    instrument_id integer NOT NULL,
    start_ns      bigint NOT NULL,
    end_ns        bigint NOT NULL,
    open          bigint NOT NULL,
    high          bigint NOT NULL,
    low           bigint NOT NULL,
    close         bigint NOT NULL,
    volume        bigint NOT NULL,
    trades        bigint NOT NULL
) PARTITION BY RANGE (start_ns);
CREATE INDEX ON bars (instrument_id, start_ns);

-- orders as risk approved them (immutable); their life is in order_events
CREATE TABLE orders (
    run_id          bigint NOT NULL,
    client_order_id bigint NOT NULL,
    strategy_id     integer NOT NULL,
    instrument_id   integer NOT NULL,
    side            smallint NOT NULL,
    order_type      smallint NOT NULL,
    tif             smallint NOT NULL,
    px              bigint NOT NULL,
    qty             bigint NOT NULL,
    stop_px         bigint NOT NULL,
    flags           integer NOT NULL,
    expire_ns       bigint NOT NULL,
    ts_origin       bigint NOT NULL,
    ts_approved     bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, client_order_id)
);

-- every execution event and every cancel/replace request, in the order exec published them
-- (seq); msg holds the exact MessagePack frame, event_hash its digest (the idempotency key: a
-- frame recorded twice, after a recorder restart or a journal replay, is stored once)
CREATE TABLE order_events (
    seq             bigserial,
    run_id          bigint NOT NULL,
    event_hash      bytea NOT NULL,
    kind            text NOT NULL,
    client_order_id bigint NOT NULL,
    instrument_id   integer NOT NULL,
    reason          text NOT NULL,
    ts_event        bigint NOT NULL,
    msg             bytea NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, event_hash)
);
CREATE INDEX ON order_events (run_id, seq);
CREATE INDEX ON order_events (run_id, client_order_id);

CREATE TABLE fills (
    run_id          bigint NOT NULL,
    fill_id         bigint NOT NULL,
    client_order_id bigint NOT NULL,
    venue_order_id  bigint NOT NULL,
    instrument_id   integer NOT NULL,
    side            smallint NOT NULL,
    px              bigint NOT NULL,
    qty             bigint NOT NULL,
    cum_qty         bigint NOT NULL,
    leaves_qty      bigint NOT NULL,
    fee             double precision NOT NULL,
    liquidity       smallint NOT NULL,
    ts_origin       bigint NOT NULL,
    ts_event        bigint NOT NULL,
    ts_recv         bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, fill_id)
);
CREATE INDEX ON fills (run_id, client_order_id);

-- latest position per instrument (upserted) and its history (appended)
CREATE TABLE positions (
    run_id        bigint NOT NULL,
    instrument_id integer NOT NULL,
    position      bigint NOT NULL,
    avg_px        double precision NOT NULL,
    mark_px       bigint NOT NULL,
    realized      double precision NOT NULL,
    unrealized    double precision NOT NULL,
    fees          double precision NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, instrument_id)
);

CREATE TABLE pnl_snapshots (
    run_id        bigint NOT NULL,
    ts            timestamptz NOT NULL DEFAULT now(),
    instrument_id integer NOT NULL,
    position      bigint NOT NULL,
    mark_px       bigint NOT NULL,
    realized      double precision NOT NULL,
    unrealized    double precision NOT NULL,
    fees          double precision NOT NULL
);
CREATE INDEX ON pnl_snapshots (run_id, ts);

CREATE TABLE risk_events (
    run_id          bigint NOT NULL,
    event_hash      bytea NOT NULL,
    kind            smallint NOT NULL,
    instrument_id   integer NOT NULL,
    client_order_id bigint NOT NULL,
    reason          text NOT NULL,
    value           double precision NOT NULL,
    limit_value     double precision NOT NULL,
    ts              bigint NOT NULL,
    state           smallint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, event_hash)
);

-- differences found at start between the stored record and the venue, and how each was resolved
CREATE TABLE reconciliation_events (
    id              bigserial PRIMARY KEY,
    run_id          bigint NOT NULL,
    process         text NOT NULL,
    kind            smallint NOT NULL,
    client_order_id bigint NOT NULL,
    instrument_id   integer NOT NULL,
    stored          bigint NOT NULL,
    venue           bigint NOT NULL,
    action          text NOT NULL,
    ts              bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON reconciliation_events (run_id);

CREATE TABLE models (
    model_id    bigserial PRIMARY KEY,
    name        text NOT NULL,
    version     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    artifact    text NOT NULL DEFAULT '',
    params      jsonb NOT NULL DEFAULT '{}',
    metrics     jsonb NOT NULL DEFAULT '{}',
    UNIQUE (name, version)
);

CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    ts      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'
);
