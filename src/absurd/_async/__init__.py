"""The SDK: clients, workers and task contexts, asyncio in ``absurd._async`` (the
single source) and threads in ``absurd._sync`` (generated from it by
``scripts/gen-sync``; CI checks it with ``--check``). Only ``_compat.py`` is
written by hand in both packages.

A task's path goes one way, each layer calling only the ones below it:

    client.py   the client: registered tasks, queues, spawn, results, workers
    worker.py   the claim loop, wake-ups, leases, shutdown
    runner.py   runs a claimed task (its handler, with its context) to its outcome
    context.py  the handler's ``ctx``: steps, sleeps, waits, child tasks
    writes.py   a run's checkpoints, stream flushes and final call; the worker's
                group commit
    db.py       the connection or pool, error translation, retries

Every statement they send is named in ``absurd/sql/queries.sql`` (its SDK section),
read once into ``absurd._core.statements``.
"""
