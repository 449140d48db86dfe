-- Named read queries for absurdctl and Habitat (loaded by absurd/queries.py).
-- Each block starts with "-- name: noun_verb --". Per-queue tables are written
-- {t} {r} {c} {e} {w}; values are bind parameters, %(name)s.
-- Every query is bounded (LIMIT or a key lookup) and index-driven.

-- name: queue_list --
select queue_name, created_at from absurd.queues order by queue_name
