"""``python -m absurd.habitat --dsn ...``: serve the dashboard without the CLI."""

from __future__ import annotations

import argparse
import os

from absurd.habitat import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m absurd.habitat", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("ABSURD_DATABASE_URL"), help="database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7890)
    parser.add_argument("--token", help="bearer token that enables writing")
    parser.add_argument("--basic-auth", help="user:password that enables writing")
    parser.add_argument("--base-path", default="", help="serve under this URL prefix")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("--dsn (or ABSURD_DATABASE_URL) is required")
    serve(
        args.dsn,
        host=args.host,
        port=args.port,
        token=args.token,
        basic_auth=args.basic_auth,
        base_path=args.base_path,
    )


if __name__ == "__main__":
    main()
