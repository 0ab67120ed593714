-- Searches by outcome or by kind look for the rare values (denied, upstream_failed; log_read,
-- approval, session_opened ...). The common ones (outcome ok; kind request, response,
-- notification) are most of the log and are found through records_time. Indexing only the rare
-- values takes two B-tree inserts off every audited call's durable commit: on SQLite a commit of
-- five records went from 0.32 to 0.19 ms. search_sql repeats these predicates word for word so
-- that the planner may use the indexes.
DROP INDEX records_outcome_time;
DROP INDEX records_kind_time;
CREATE INDEX records_rare_outcome_time ON records (outcome, time) WHERE outcome <> 'ok';
CREATE INDEX records_rare_kind_time ON records (kind, time) WHERE kind NOT IN ('request', 'response', 'notification');
