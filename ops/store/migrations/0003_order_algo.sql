-- An execution-algorithm parent (engine/algos) keeps its algorithm and parameters in the record:
-- without them it reads as a plain order of the same size, and a restarted exec could not say
-- how it was being worked. algo is engine.messages.AlgoKind (0 = a plain order).
ALTER TABLE orders ADD COLUMN algo smallint NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN algo_params jsonb NOT NULL DEFAULT '{}';
