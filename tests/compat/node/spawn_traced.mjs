// Spawns one task with the official Absurd TypeScript SDK, a W3C traceparent (and
// tracestate) set by hand in its headers, as a traced TypeScript service would; prints
// the spawn result as JSON. tests/compat/test_typescript_tracing.py runs it.
//
// Usage: node spawn_traced.mjs <postgres-url> <queue-name> <task-name> <traceparent> <tracestate>

import pg from "pg";
import { Absurd } from "absurd-sdk";

const [url, queue, taskName, traceparent, tracestate] = process.argv.slice(2);
const pool = new pg.Pool({ connectionString: url, max: 1 });
const app = new Absurd({ db: pool, queueName: queue });
try {
  const spawned = await app.spawn(taskName, { from: "typescript" }, {
    queue,
    headers: { traceparent, tracestate },
  });
  process.stdout.write(JSON.stringify(spawned));
} finally {
  await pool.end();
}
