"""Benchmarks of Absurd for Python: scenario modules on one shared harness.

Each scenario (``backlog``, ``drain``, ``suite``, ``cli_scale``, ``habitat_scale``,
``retention``) is a module of this package that imports :mod:`benchmarks.harness`
(``ingress`` stands alone). Run one from the repository root as a module or as a file,
whichever is at hand::

    .venv/bin/python -m benchmarks.drain --quick
    .venv/bin/python benchmarks/drain.py --quick

See ``benchmarks/README.md`` for the method and the results.
"""
