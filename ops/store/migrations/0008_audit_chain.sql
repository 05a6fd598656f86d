-- A tamper-evident audit log (ops/store/audit_chain.py): every row written from now on carries
-- its place in its engine's hash chain. `seq` counts 1, 2, 3, ... per engine; `prev_hash` is
-- the previous row's `hash` (the first row's: the engine's genesis hash below); `hash` is
-- SHA-256 over the row's canonical encoding and `prev_hash`. Altering, deleting or inserting a
-- row breaks the chain at that row: `gekko db audit --verify` names it.
--
-- Rows written before this migration are not rewritten: the first chained row of each engine
-- is preceded by a genesis record (audit_genesis) holding the count, last id and digest of the
-- unchained rows then present, which freezes them too.
ALTER TABLE audit_log ADD COLUMN engine_id text;
ALTER TABLE audit_log ADD COLUMN seq bigint;
ALTER TABLE audit_log ADD COLUMN prev_hash bytea;
ALTER TABLE audit_log ADD COLUMN hash bytea;
CREATE UNIQUE INDEX audit_log_chain ON audit_log (engine_id, seq);

CREATE TABLE audit_genesis (
    engine_id      text PRIMARY KEY,
    created_at     timestamptz NOT NULL,
    legacy_rows    bigint NOT NULL,
    legacy_last_id bigint NOT NULL,
    legacy_sha256  bytea NOT NULL,
    hash           bytea NOT NULL
);
