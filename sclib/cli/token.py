"""``sclib token EMAIL``: make a token that this server accepts.

It signs an HS256 token with ``SCLIB_SECRET_KEY`` (needs the ``server`` extra for
PyJWT), so a newcomer who turned authentication on can make a token without
writing Python.
"""

from __future__ import annotations

import argparse
from typing import Any

from sclib.cli._common import EXIT_OK, settings_from

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``token``."""
    tok = sub.add_parser(
        "token",
        help="print a token for a user, signed with SCLIB_SECRET_KEY",
        description="Print an HS256 bearer token for EMAIL that a server with the "
        "same SCLIB_SECRET_KEY accepts.",
    )
    tok.set_defaults(run=run)
    tok.add_argument("email", help="the user the token stands for")
    tok.add_argument(
        "--role",
        action="append",
        default=[],
        dest="roles",
        help="a role the token carries, e.g. admin (repeatable; default: none)",
    )
    tok.add_argument(
        "--hours", type=float, default=8.0, help="hours until the token expires"
    )


def run(args: argparse.Namespace) -> int:
    """Print the token on stdout."""
    from sclib.errors import ConfigurationError, InvalidInput
    from sclib.server.auth import Authenticator

    settings = settings_from(args)
    if not (settings.secret_key and settings.secret_key.get_secret_value()):
        raise ConfigurationError(
            "sclib token signs with SCLIB_SECRET_KEY, which is not set: set it to "
            "the same long random string the server uses"
        )
    if args.hours <= 0:
        raise InvalidInput(f"--hours must be positive, got {args.hours:g}")
    auth = Authenticator.from_settings(settings)
    print(auth.issue_token(args.email, roles=args.roles, ttl=int(args.hours * 3600)))
    return EXIT_OK
