-- The audit log is written through the recorder while the engine runs: a record may be
-- delivered twice (a recorder restarted mid-batch, a journal replayed after an outage), so
-- each row carries the digest of its exact frame and the database stores it once. Rows keep
-- the run they belong to (0: written outside a run, by a CLI command).
ALTER TABLE audit_log ADD COLUMN run_id bigint NOT NULL DEFAULT 0;
ALTER TABLE audit_log ADD COLUMN event_hash bytea;
CREATE UNIQUE INDEX audit_log_event_hash ON audit_log (event_hash);
CREATE INDEX audit_log_action ON audit_log (action, ts);
