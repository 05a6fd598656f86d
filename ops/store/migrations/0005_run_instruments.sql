-- Which symbol each instrument id meant in each run. `instruments` holds only the latest
-- mapping (upserted by id), but ids may be reassigned between runs (a config that lists its
-- instruments in another order): market data of an earlier run is matched to today's
-- instruments by symbol through this table, and its ticks are turned into prices with that
-- run's tick size. Written by the risk process at start (procs/risk_history.py), which reads
-- it back to seed its returns window from the record.
CREATE TABLE run_instruments (
    run_id        bigint NOT NULL,
    instrument_id integer NOT NULL,
    symbol        text NOT NULL,
    tick_size     double precision NOT NULL,
    PRIMARY KEY (run_id, instrument_id)
);
CREATE INDEX ON run_instruments (symbol, run_id);
