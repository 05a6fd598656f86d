-- order_events was the slowest part of recording a fill (each fill is one order_events row and
-- one fills row): its key (run_id, event_hash) put every new row at a random place in the
-- index (a digest is random), so each COPY touched pages all over it, and a second index,
-- (run_id, seq), was maintained on every row for the one query that reads it (recovery).
--
-- The new key (run_id, client_order_id, event_hash) rejects exactly the same duplicates: the
-- client order id is read from the very frame the digest is taken of, so two rows with the same
-- (run_id, event_hash) always have the same client_order_id too (and the other way round). But
-- new rows now land where the recent orders are (client order ids grow), and the same index
-- serves the per-order lookup that 0002 had to drop.
--
-- Recovery's `WHERE run_id = $1 ORDER BY seq` now reads the run through this key and sorts it
-- (once, at start); seq itself is unchanged and still gives the publication order.
ALTER TABLE order_events DROP CONSTRAINT order_events_pkey;
ALTER TABLE order_events ADD PRIMARY KEY (run_id, client_order_id, event_hash);
DROP INDEX IF EXISTS order_events_run_id_seq_idx;
