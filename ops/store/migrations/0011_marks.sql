-- Issue 17: a perpetual's mark price as its venue publishes it (engine/messages.py MarkPrice,
-- tag 61): the price the venue charges funding and margin at, its index and the current
-- interval's funding rate. Market data like quotes: partitioned by day of ts_event (ns since
-- the epoch), the writer creates each day's partition before its first COPY into it.
CREATE TABLE marks (
    run_id          bigint NOT NULL,
    instrument_id   integer NOT NULL,
    mark_px         bigint NOT NULL,   -- ticks
    index_px        bigint NOT NULL,   -- ticks; 0: the venue gave none
    funding_rate    double precision NOT NULL,
    next_funding_ns bigint NOT NULL,   -- ns since the epoch; 0: unknown
    ts_event        bigint NOT NULL,
    ts_recv         bigint NOT NULL
) PARTITION BY RANGE (ts_event);
CREATE INDEX ON marks (instrument_id, ts_event);
