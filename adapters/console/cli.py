"""`patrollink console ...`: the operator console and patrol terminal web server; accounts.

    patrollink console [--district F] [--nats URLS] [--prefix P] [--host 127.0.0.1] [--port 8080] [--users FILE]
    patrollink console adduser NAME --role operator|supervisor|unit [--unit ID] [--users FILE] [--password-stdin]
    patrollink console users [--users FILE]

dispatch/cli.py calls `register(sub)` when this module exists.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

USAGE = """\
patrollink console [--district F] [--nats URLS] [--prefix P] [--host H] [--port N] [--users FILE]
       patrollink console adduser NAME --role operator|supervisor|unit [--unit ID] [--users FILE] [--password-stdin]
       patrollink console users [--users FILE]"""

DESCRIPTION = """\
Serve the operator console (/console) and the patrol terminal (/terminal) over
HTTP, with live camera video over WebRTC and a live channel bridged to NATS.
The server comes from --nats, then $PATROLLINK_NATS, then .state/nats.url
(written by `patrollink run` / `patrollink nats`).

Accounts live in a YAML users file (default .state/console-users.yaml, or
$PATROLLINK_CONSOLE_USERS) with scrypt password hashes:

  adduser NAME --role R [--unit ID]   add or replace an account (asks for the password,
                                      or reads one line from stdin with --password-stdin)
  users                               list the accounts
"""


def _state_dir() -> Path:
    from dispatch.cli import STATE_DIR

    return Path(STATE_DIR)


def default_users_file() -> str:
    return os.environ.get("PATROLLINK_CONSOLE_USERS", str(_state_dir() / "console-users.yaml"))


def register(sub: Any) -> None:
    from dispatch.cli import _district_arg, _nats_arg

    p = sub.add_parser(
        "console", help="operator console and patrol terminal (web); `console adduser`, `console users`", usage=USAGE,
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("words", nargs="*", metavar="adduser NAME | users", help="a sub-command (default: serve)")
    _district_arg(p)
    _nats_arg(p)
    p.add_argument("--host", default=os.environ.get("PATROLLINK_CONSOLE_HOST", "127.0.0.1"), help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PATROLLINK_CONSOLE_PORT", "8080")))
    p.add_argument("--users", default=None, help="users file (YAML; default $PATROLLINK_CONSOLE_USERS or .state/console-users.yaml)")
    p.add_argument("--console-id", default=os.environ.get("PATROLLINK_CONSOLE_ID", "console"), help="this console's id (alerts.operator.<id>)")
    p.add_argument("--cookie-secure", choices=("auto", "always", "never"), default="auto",
                   help="Secure flag of the session cookie: auto = when the request came over https (default)")
    p.add_argument("--ice-host", action="append", default=None, metavar="ADDR",
                   help="WebRTC host candidate address (repeatable); default 127.0.0.1 when listening on loopback, "
                   "else this machine's addresses")
    p.add_argument("--video-encode", choices=("shared", "per-viewer"), default="shared",
                   help="encode each camera once for every viewer (default), or once per viewer")
    p.add_argument("--secret-file", default=None, help="cookie signing key (created if missing; default .state/console-secret)")
    p.add_argument("--log-level", default="info")
    # adduser
    p.add_argument("--role", choices=("operator", "supervisor", "unit"), help="adduser: the account's role")
    p.add_argument("--unit", help="adduser: the unit id (role unit)")
    p.add_argument("--name", default="", help="adduser: a display name")
    p.add_argument("--password-stdin", action="store_true", help="adduser: read the password from stdin")
    p.set_defaults(func=cmd_console)


def cmd_console(a: argparse.Namespace) -> int:
    words = list(a.words)
    users = a.users or default_users_file()
    if words and words[0] == "adduser":
        if len(words) != 2:
            raise SystemExit("usage: patrollink console adduser NAME --role operator|supervisor|unit [--unit ID]")
        return cmd_adduser(a, words[1], users)
    if words and words[0] == "users":
        return cmd_users(users)
    if words:
        raise SystemExit(f"patrollink console: unknown sub-command {words[0]!r} (adduser, users)")
    return cmd_serve(a, users)


def cmd_adduser(a: argparse.Namespace, name: str, users: str) -> int:
    from adapters.console.auth import UsersFileError, add_user

    if not a.role:
        raise SystemExit("patrollink console adduser: --role operator|supervisor|unit is required")
    if a.role == "unit" and not a.unit:
        raise SystemExit("patrollink console adduser: a unit account needs --unit ID")
    known = None
    try:
        from dispatch.cli import _load_district

        known = {u.id for u in _load_district(a.district).units}
    except SystemExit:
        pass
    if a.password_stdin:
        pw = sys.stdin.readline().rstrip("\n")
    else:
        pw = getpass.getpass(f"password for {name}: ")
        if pw != getpass.getpass("again: "):
            raise SystemExit("patrollink console adduser: the passwords differ")
    if len(pw) < 8:
        raise SystemExit("patrollink console adduser: use at least 8 characters")
    try:
        add_user(users, name, a.role, pw, unit=a.unit, name=a.name, known_units=known)
    except (UsersFileError, ValueError) as e:
        raise SystemExit(f"patrollink console adduser: {e}") from None
    print(f"{name} ({a.role}{', unit ' + a.unit if a.unit else ''}) saved in {users}")
    return 0


def cmd_users(users: str) -> int:
    from adapters.console.auth import Users, UsersFileError

    try:
        accounts = Users(users).all()
    except UsersFileError as e:
        raise SystemExit(f"patrollink console: {e}") from None
    for u in sorted(accounts, key=lambda u: (u.role, u.username)):
        print(f"{u.username:<20} {u.role:<11} {u.unit or ''}")
    print(f"{len(accounts)} accounts in {users}")
    return 0


def cmd_serve(a: argparse.Namespace, users: str) -> int:
    from adapters.console.auth import UsersFileError, load_or_create_secret
    from adapters.console.server import ConsoleServer, create_app
    from dispatch.cli import _client_urls, _load_district, _until_signalled
    from dispatch.logs import configure

    configure(level=a.log_level)
    district = _load_district(a.district)
    urls = _client_urls(a.nats)
    if not Path(users).exists():
        raise SystemExit(
            f"patrollink console: no users file at {users}. Add the first account with\n"
            f"  patrollink console adduser NAME --role operator --users {users}"
        )
    secret = load_or_create_secret(a.secret_file or _state_dir() / "console-secret")
    ice = a.ice_host
    if ice is None:
        ice = ["127.0.0.1"] if a.host in ("127.0.0.1", "localhost", "::1") else None

    async def main() -> None:
        try:
            app = create_app(district, urls, prefix=a.prefix, users_file=users, console_id=a.console_id, secret=secret,
                             cookie_secure=a.cookie_secure, ice_hosts=ice, video_encode=a.video_encode)
        except UsersFileError as e:
            raise SystemExit(f"patrollink console: {e}") from None
        server = await ConsoleServer(app, a.host, a.port).start()
        print(f"console for district {district.name} at {server.url}/  (NATS {', '.join(urls)}; users {users}); Ctrl-C stops", flush=True)
        try:
            await _until_signalled()
        finally:
            await server.stop()

    asyncio.run(main())
    return 0
