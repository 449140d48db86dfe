"""Absurd for Python: durable execution on PostgreSQL and nothing else."""

from absurd.schema import SCHEMA_VERSION, install, installed_version, schema_sql

__all__ = ["SCHEMA_VERSION", "install", "installed_version", "schema_sql"]
__version__ = "0.6.0"
