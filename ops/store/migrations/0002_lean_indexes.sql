-- Fewer indexes on the two busiest trading tables: every index is maintained on every COPY.
-- Recovery reads a run's fills by (run_id, fill_id) and its events by (run_id, seq); the
-- per-order lookups are rare and served by a scan of one run.
DROP INDEX IF EXISTS fills_run_id_client_order_id_idx;
DROP INDEX IF EXISTS order_events_run_id_client_order_id_idx;
