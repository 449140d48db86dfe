"""The asyncio implementation: the single source of the sync twin in ``absurd._sync``.

Edit these files, then run ``scripts/gen-sync`` (CI checks it with ``--check``).
Only ``_compat.py`` is written by hand in both packages.
"""
