-- Issue 17: what a venue does to an account without an order of ours — a perpetual's funding,
-- an FX position's financing at the rollover, a market settling a position (a future's expiry,
-- a binary contract or betting market resolved or voided), a liquidation, the margin account's
-- state (a margin call). One table: few rows per run, read back in publication order (seq) by
-- recovery and the report; msg holds the exact MessagePack frame, event_hash its digest (the
-- idempotency key, as for order_events: a frame recorded twice is stored once).
--
-- The columns a query needs without decoding msg (ops/store/account_rows.py fills them):
--   amount   money in currency, as the account sees it (> 0 received): funding, financing;
--            a settlement's fee (commission) negated; a liquidation's fee negated; a margin
--            status's equity
--   px       ticks: the funding mark, the settlement or liquidation price (0: none)
--   qty      lots, signed: the position funded / financed / settled; a liquidation's closing
--            trade (side x qty)
CREATE TABLE account_events (
    seq           bigserial,
    run_id        bigint NOT NULL,
    event_hash    bytea NOT NULL,
    kind          text NOT NULL,
    instrument_id integer NOT NULL,  -- -1: the whole account (MarginStatus)
    venue         text NOT NULL,     -- MarginStatus's venue ('' for the others)
    currency      text NOT NULL,     -- '' where the message names none (the instrument's)
    amount        double precision NOT NULL,
    px            bigint NOT NULL,
    qty           bigint NOT NULL,
    ts_event      bigint NOT NULL,
    msg           bytea NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, event_hash)
);
CREATE INDEX ON account_events (run_id, seq);

-- what kind of contract each instrument is (engine/instruments.py): the kind, and the keys of
-- the kind that differ from their defaults (contract size, margins, expiry, market, ...)
ALTER TABLE instruments ADD COLUMN kind text NOT NULL DEFAULT 'spot';
ALTER TABLE instruments ADD COLUMN spec jsonb NOT NULL DEFAULT '{}';
