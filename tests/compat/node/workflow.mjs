// Runs workflows with the official Absurd TypeScript SDK (absurd-sdk 0.5.0) against a
// database and prints ONE JSON object of observations on stdout. Assertions live in
// tests/compat/test_typescript_sdk.py; this script only observes.
//
// Usage: node workflow.mjs <postgres-url> <queue-name>
//
// Every scenario runs in the given queue (created here through the SDK), finishes or
// parks all of its tasks before the next one starts, and records either its
// observations or {"error": "..."} so one broken scenario does not hide the others.

import pg from "pg";
import { Absurd, CancelledTask, TimeoutError } from "absurd-sdk";

const [url, queue] = process.argv.slice(2);
if (!url || !queue) {
  console.error("usage: node workflow.mjs <postgres-url> <queue-name>");
  process.exit(2);
}

// stdout carries the JSON result only; the SDK's own logging goes to stderr.
const log = {
  log: (...args) => console.error(...args),
  info: (...args) => console.error(...args),
  warn: (...args) => console.error(...args),
  error: (...args) => console.error(...args),
};

const NO_DELAY = { kind: "fixed", baseSeconds: 0 };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const errorInfo = (err) => ({ name: err?.name ?? null, message: err?.message ?? String(err) });

const pool = new pg.Pool({ connectionString: url, max: 4 });
const hookLog = [];
const app = new Absurd({
  db: pool,
  queueName: queue,
  log,
  hooks: {
    beforeSpawn: (taskName, params, options) =>
      taskName === "ts-headers"
        ? { ...options, headers: { ...(options.headers ?? {}), trace_id: `trace-${taskName}` } }
        : options,
    wrapTaskExecution: async (ctx, execute) => {
      hookLog.push(ctx.taskID);
      return await execute();
    },
  },
});

async function stepsAndRetry() {
  const calls = { handler: 0, charge: 0, ship: 0 };
  const handles = [];
  app.registerTask({ name: "ts-order" }, async (params, ctx) => {
    calls.handler += 1;
    const charged = await ctx.step("charge", async () => {
      calls.charge += 1;
      return { charged: params.amount };
    });
    if (calls.handler === 1) throw new Error("transient failure after charge");
    const handle = await ctx.beginStep("ship");
    handles.push({ name: handle.name, checkpointName: handle.checkpointName, done: handle.done });
    const shipped = handle.done
      ? handle.state
      : await ctx.completeStep(handle, (calls.ship += 1, "shipped"));
    const again = await ctx.step("charge", async () => "second charge slot");
    return { charged, shipped, again };
  });
  const spawned = await app.spawn("ts-order", { amount: 42 }, {
    maxAttempts: 3,
    retryStrategy: NO_DELAY,
  });
  await app.workBatch();
  const afterFirst = { ...calls, state: (await app.fetchTaskResult(spawned.taskID)).state };
  await app.workBatch();
  const afterSecond = { ...calls };
  await app.workBatch(); // nothing left
  return {
    spawned,
    afterFirst,
    afterSecond,
    afterThird: { ...calls },
    handles,
    result: await app.fetchTaskResult(spawned.taskID),
  };
}

async function retriesExhausted() {
  let attempts = 0;
  app.registerTask({ name: "ts-flaky", defaultMaxAttempts: 3 }, async () => {
    attempts += 1;
    throw new Error(`boom ${attempts}`);
  });
  const { taskID } = await app.spawn("ts-flaky", null, { retryStrategy: NO_DELAY });
  for (let i = 0; i < 5; i += 1) await app.workBatch();
  return {
    taskID,
    attempts,
    fetched: await app.fetchTaskResult(taskID),
    awaited: await app.awaitTaskResult(taskID, { timeout: 2 }),
  };
}

async function sleepFor() {
  const calls = { handler: 0, before: 0, after: 0 };
  app.registerTask({ name: "ts-nap" }, async (_params, ctx) => {
    calls.handler += 1;
    await ctx.step("before", async () => (calls.before += 1));
    await ctx.sleepFor("nap", 0.3);
    await ctx.step("after", async () => (calls.after += 1));
    return "awake";
  });
  const { taskID } = await app.spawn("ts-nap", null);
  await app.workBatch();
  const sleeping = { ...calls, state: (await app.fetchTaskResult(taskID)).state };
  await sleep(450);
  await app.workBatch();
  return { taskID, sleeping, final: { ...calls }, result: await app.fetchTaskResult(taskID) };
}

async function events() {
  const calls = {};
  app.registerTask({ name: "ts-waiter" }, async (params, ctx) => {
    calls[params.event] = (calls[params.event] ?? 0) + 1;
    return { got: await ctx.awaitEvent(params.event) };
  });
  await app.emitEvent("ts-early", { n: 1 });
  const early = await app.spawn("ts-waiter", { event: "ts-early" });
  await app.workBatch();
  const late = await app.spawn("ts-waiter", { event: "ts-late" });
  await app.workBatch();
  const lateBeforeEmit = (await app.fetchTaskResult(late.taskID)).state;
  await app.emitEvent("ts-late", { n: 2 });
  await app.emitEvent("ts-late", { n: 3 }); // first emit wins
  const lateAfterEmit = (await app.fetchTaskResult(late.taskID)).state;
  await app.workBatch();
  return {
    early: { taskID: early.taskID, result: await app.fetchTaskResult(early.taskID) },
    late: {
      taskID: late.taskID,
      beforeEmit: lateBeforeEmit,
      afterEmit: lateAfterEmit,
      result: await app.fetchTaskResult(late.taskID),
    },
    calls,
  };
}

async function eventTimeout() {
  // Fake time is a session setting, so use one bound connection for this scenario.
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const bound = app.bindToConnection(client);
    const caught = [];
    app.registerTask({ name: "ts-patient" }, async (_params, ctx) => {
      try {
        return await ctx.awaitEvent("ts-never", { timeout: 60 });
      } catch (err) {
        if (!(err instanceof TimeoutError)) throw err; // e.g. SuspendTask must propagate
        caught.push(errorInfo(err));
        return "gave up";
      }
    });
    const { rows } = await client.query("select absurd.current_time() as now");
    const t0 = rows[0].now.getTime();
    const setNow = (offsetSeconds) =>
      client.query("select set_config('absurd.fake_now', $1, false)", [
        new Date(t0 + offsetSeconds * 1000).toISOString(),
      ]);
    await setNow(0);
    const { taskID } = await bound.spawn("ts-patient", null);
    await bound.workBatch();
    const afterAwait = (await bound.fetchTaskResult(taskID)).state;
    await setNow(59);
    await bound.workBatch();
    const caughtAt59 = caught.length;
    await setNow(61);
    await bound.workBatch();
    return {
      taskID,
      t0: new Date(t0).toISOString(),
      afterAwait,
      caughtAt59,
      caught,
      result: await bound.fetchTaskResult(taskID),
    };
  } finally {
    await client.end();
  }
}

async function idempotentSpawn() {
  app.registerTask({ name: "ts-once" }, async (params) => params);
  const a = await app.spawn("ts-once", { v: 1 }, { idempotencyKey: "ts-key-1" });
  const b = await app.spawn("ts-once", { v: 2 }, { idempotencyKey: "ts-key-1" });
  const c = await app.spawn("ts-once", { v: 3 }, { idempotencyKey: "ts-key-2" });
  await app.workBatch("worker", 120, 5);
  const d = await app.spawn("ts-once", { v: 4 }, { idempotencyKey: "ts-key-1" });
  return { a, b, c, d, resultA: await app.fetchTaskResult(a.taskID) };
}

async function cancel() {
  const effects = [];
  app.registerTask({ name: "ts-cancel-me" }, async (_params, ctx) => {
    effects.push("handler");
    await ctx.step("one", async () => effects.push("one"));
    await app.cancelTask(ctx.taskID);
    try {
      await ctx.step("two", async () => effects.push("two"));
    } catch (err) {
      effects.push(err instanceof CancelledTask ? "CancelledTask" : `other:${err?.name}`);
      throw err;
    }
    await ctx.step("three", async () => effects.push("three"));
    return "finished";
  });
  const running = await app.spawn("ts-cancel-me", null);
  await app.workBatch();
  const pending = await app.spawn("ts-cancel-me", null);
  await app.cancelTask(pending.taskID);
  await app.workBatch();
  return {
    effects,
    running: { taskID: running.taskID, result: await app.fetchTaskResult(running.taskID) },
    pending: { taskID: pending.taskID, result: await app.fetchTaskResult(pending.taskID) },
  };
}

async function retryTask() {
  let calls = 0;
  app.registerTask({ name: "ts-fragile" }, async (params, ctx) => {
    calls += 1;
    if (calls === 1 || calls === 3) throw new Error(`call ${calls} fails`);
    return { n: params.n, headers: ctx.headers };
  });
  const first = await app.spawn("ts-fragile", { n: 1 }, { maxAttempts: 1 });
  await app.workBatch();
  const failedState = (await app.fetchTaskResult(first.taskID)).state;
  const inPlace = await app.retryTask(first.taskID);
  await app.workBatch();
  const second = await app.spawn("ts-fragile", { n: 2 }, { maxAttempts: 1, headers: { h: "v" } });
  await app.workBatch();
  const fresh = await app.retryTask(second.taskID, { spawnNewTask: true, maxAttempts: 3 });
  await app.workBatch();
  let notFailedError = null;
  try {
    await app.retryTask(first.taskID);
  } catch (err) {
    notFailedError = errorInfo(err);
  }
  return {
    first: { ...first, failedState, result: await app.fetchTaskResult(first.taskID) },
    inPlace,
    second: { ...second, result: await app.fetchTaskResult(second.taskID) },
    fresh: { ...fresh, result: await app.fetchTaskResult(fresh.taskID) },
    notFailedError,
    calls,
  };
}

async function results() {
  app.registerTask({ name: "ts-null" }, async () => undefined);
  const unknown = await app.fetchTaskResult("00000000-0000-7000-8000-000000000000");
  const { taskID } = await app.spawn("ts-null", [1, 2]);
  const pending = await app.fetchTaskResult(taskID);
  let awaitTimeout = null;
  try {
    await app.awaitTaskResult(taskID, { timeout: 0.2 });
  } catch (err) {
    awaitTimeout = { ...errorInfo(err), isTimeoutError: err instanceof TimeoutError };
  }
  await app.workBatch();
  return { unknown, taskID, pending, awaitTimeout, completed: await app.awaitTaskResult(taskID, { timeout: 2 }) };
}

async function headersAndHooks() {
  const seen = [];
  app.registerTask({ name: "ts-headers" }, async (_params, ctx) => {
    seen.push(ctx.headers);
    return ctx.headers;
  });
  hookLog.length = 0;
  const { taskID } = await app.spawn("ts-headers", {}, { headers: { tenant: "acme" } });
  await app.workBatch();
  return { taskID, seen, hookLog: [...hookLog], result: await app.fetchTaskResult(taskID) };
}

async function childTask() {
  const childQueue = `${queue}_c`;
  const children = new Absurd({ db: pool, queueName: childQueue, log });
  await children.createQueue();
  try {
    children.registerTask({ name: "ts-child" }, async (params) => ({ doubled: params.n * 2 }));
    app.registerTask({ name: "ts-parent" }, async (params, ctx) => {
      const snap = await ctx.awaitTaskResult(params.child, { queue: childQueue, timeout: 5 });
      return { child: snap };
    });
    const child = await children.spawn("ts-child", { n: 21 });
    await children.workBatch();
    const parent = await app.spawn("ts-parent", { child: child.taskID });
    await app.workBatch();
    return { child, parent, result: await app.fetchTaskResult(parent.taskID) };
  } finally {
    await children.dropQueue();
  }
}

async function queues() {
  const other = `${queue}_x`;
  await app.createQueue(other, { cleanupTtl: "7 days", cleanupLimit: 10 });
  await app.createQueue(other); // idempotent
  const created = await app.getQueuePolicy(other);
  await app.setQueuePolicy(other, { cleanupLimit: 20, cleanupTtl: "1 hour" });
  const updated = await app.getQueuePolicy(other);
  const listed = await app.listQueues();
  await app.dropQueue(other);
  return {
    other,
    created,
    updated,
    listed,
    afterDrop: await app.listQueues(),
    droppedPolicy: await app.getQueuePolicy(other),
  };
}

async function partitionedQueue() {
  const parted = `${queue}_p`;
  await app.createQueue(parted, { storageMode: "partitioned", detachMode: "empty" });
  try {
    const policy = await app.getQueuePolicy(parted);
    const worker = new Absurd({ db: pool, queueName: parted, log });
    worker.registerTask({ name: "ts-in-partitioned" }, async (params, ctx) =>
      ctx.step("double", async () => params * 2),
    );
    const first = await worker.spawn("ts-in-partitioned", 21, { idempotencyKey: "p-1" });
    const again = await worker.spawn("ts-in-partitioned", 0, { idempotencyKey: "p-1" });
    await worker.workBatch();
    return { parted, policy, first, again, result: await worker.fetchTaskResult(first.taskID) };
  } finally {
    await app.dropQueue(parted);
  }
}

const scenarios = {
  stepsAndRetry,
  retriesExhausted,
  sleepFor,
  events,
  eventTimeout,
  idempotentSpawn,
  cancel,
  retryTask,
  results,
  headersAndHooks,
  childTask,
  queues,
  partitionedQueue,
};

const observations = {};
try {
  await app.createQueue();
  observations.ownPolicy = await app.getQueuePolicy();
  for (const [name, run] of Object.entries(scenarios)) {
    try {
      observations[name] = await run();
    } catch (err) {
      observations[name] = { error: `${err?.name}: ${err?.message}`, stack: err?.stack ?? null };
    }
  }
} finally {
  await app.close();
  await pool.end().catch(() => {});
}
process.stdout.write(`${JSON.stringify(observations)}\n`);
