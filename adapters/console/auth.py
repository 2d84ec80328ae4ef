"""Accounts, passwords and sessions for the console and the patrol terminal.

The users file is YAML the deployer edits (or `patrollink console adduser` writes)::

    users:
      - username: chen
        role: operator            # operator | supervisor | unit
        password: scrypt$16384$8$1$<salt, base64>$<hash, base64>
      - username: p07
        role: unit
        unit: p07                 # the unit this account speaks for (units only)
        password: scrypt$...

Passwords are hashed with scrypt (n=2^14, r=8, p=1, 16-byte random salt); `pbkdf2_sha256$<iterations>$...`
hashes are accepted too. The file is re-read when it changes, so a removed account or a changed role
takes effect on the next request of a session that is already open.

A session is a signed cookie (HMAC-SHA256 over its JSON: user, role, unit, expiry, session id),
HttpOnly, SameSite=Strict, Secure when the request came over https (or always / never, see
`cookie_secure`). Logging out revokes the session id on the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = ("operator", "supervisor", "unit")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_TTL_S = 12 * 3600
COOKIE = "pl_session"


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password: str  # the hash
    unit: str | None = None
    name: str = ""

    @property
    def is_operator(self) -> bool:
        """Operators and supervisors work the console."""
        return self.role in ("operator", "supervisor")

    def public(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "unit": self.unit, "name": self.name or self.username}


# --------------------------------------------------------------------------- password hashes


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password is empty")
    salt = os.urandom(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(h)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        parts = stored.split("$")
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, want = base64.b64decode(parts[4]), base64.b64decode(parts[5])
            got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=256 * 1024 * 1024)
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            it, salt, want = int(parts[1]), base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, it, dklen=len(want))
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# --------------------------------------------------------------------------- the users file


def parse_users(data: Any, source: str = "users file", known_units: set[str] | None = None) -> dict[str, User]:
    if data is None:
        data = {"users": []}
    if not isinstance(data, dict) or not isinstance(data.get("users", []), list):
        raise UsersFileError(f"{source}: expected a mapping with a `users:` list")
    out: dict[str, User] = {}
    for i, u in enumerate(data.get("users") or []):
        where = f"{source}: users[{i}]"
        if not isinstance(u, dict):
            raise UsersFileError(f"{where}: expected a mapping (username, role, password)")
        extra = set(u) - {"username", "role", "password", "unit", "name"}
        if extra:
            raise UsersFileError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        name = str(u.get("username") or "")
        if not name or any(c.isspace() for c in name) or len(name) > 64:
            raise UsersFileError(f"{where}: username must be 1-64 characters without spaces")
        role = u.get("role")
        if role not in ROLES:
            raise UsersFileError(f"{where} ({name}): role must be one of {', '.join(ROLES)}, got {role!r}")
        pw = str(u.get("password") or "")
        if not pw.startswith(("scrypt$", "pbkdf2_sha256$")):
            raise UsersFileError(f"{where} ({name}): password must be a hash (scrypt$... or pbkdf2_sha256$...); "
                                 "use `patrollink console adduser` to write one")
        unit = u.get("unit")
        if role == "unit":
            if not unit:
                raise UsersFileError(f"{where} ({name}): a unit account needs `unit: <unit id>`")
            if known_units is not None and unit not in known_units:
                raise UsersFileError(f"{where} ({name}): unit {unit!r} is not in the district")
        elif unit:
            raise UsersFileError(f"{where} ({name}): only unit accounts have a `unit`")
        if name in out:
            raise UsersFileError(f"{where}: username {name!r} is used twice")
        out[name] = User(username=name, role=role, password=pw, unit=str(unit) if unit else None, name=str(u.get("name") or ""))
    return out


class Users:
    """The accounts, from a YAML file re-read when it changes (or given in memory for tests)."""

    def __init__(self, path: str | Path | None = None, users: dict[str, User] | None = None,
                 known_units: set[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.known_units = known_units
        self._users: dict[str, User] = dict(users or {})
        self._mtime: float | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            if force:
                raise UsersFileError(f"users file {self.path} does not exist; create it with "
                                     f"`patrollink console adduser NAME --role operator --users {self.path}`") from None
            self._users = {}
            return
        if not force and mtime == self._mtime:
            return
        with self._lock:
            text = self.path.read_text(encoding="utf-8")
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise UsersFileError(f"{self.path}: not valid YAML: {e}") from None
            self._users = parse_users(data, str(self.path), self.known_units)
            self._mtime = mtime

    def get(self, username: str) -> User | None:
        try:
            self._reload()
        except UsersFileError:
            pass  # keep the accounts we had: a half-saved edit must not lock everybody out
        return self._users.get(username)

    def all(self) -> list[User]:
        self._reload()
        return list(self._users.values())

    def check(self, username: str, password: str) -> User | None:
        u = self.get(username)
        if u is None:
            verify_password(password, _DUMMY_HASH)  # same time whether the user exists or not
            return None
        return u if verify_password(password, u.password) else None


_DUMMY_HASH = "scrypt$16384$8$1$" + _b64(b"\0" * 16) + "$" + _b64(b"\0" * 32)


def add_user(path: str | Path, username: str, role: str, password: str, unit: str | None = None,
             name: str = "", known_units: set[str] | None = None) -> None:
    """Add or replace an account in the users file (created with mode 0600 if missing)."""
    p = Path(path)
    data: dict[str, Any] = {"users": []}
    if p.exists():
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {"users": []}
    users = [u for u in (data.get("users") or []) if u.get("username") != username]
    entry: dict[str, Any] = {"username": username, "role": role}
    if unit:
        entry["unit"] = unit
    if name:
        entry["name"] = name
    entry["password"] = hash_password(password)
    users.append(entry)
    data["users"] = users
    parse_users(data, str(p), known_units)  # refuse to write a file the server would refuse
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# PatrolLink console accounts. Edit with `patrollink console adduser`; passwords are scrypt hashes.\n")
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, p)


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Session:
    username: str
    role: str
    unit: str | None
    sid: str
    exp: float


class Sessions:
    """Signed session cookies; logout revokes a session id for the rest of its life."""

    def __init__(self, secret: bytes | None = None, ttl_s: float = SESSION_TTL_S) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._revoked: dict[str, float] = {}

    def _sign(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, body, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, user: User) -> tuple[str, Session]:
        s = Session(user.username, user.role, user.unit, secrets.token_urlsafe(12), time.time() + self.ttl_s)
        body = json.dumps({"u": s.username, "r": s.role, "n": s.unit, "s": s.sid, "e": int(s.exp)}, separators=(",", ":")).encode()
        token = base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._sign(body)
        return token, s

    def read(self, token: str | None) -> Session | None:
        if not token or "." not in token or len(token) > 1000:
            return None
        b64, sig = token.rsplit(".", 1)
        try:
            body = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(self._sign(body), sig):
            return None
        try:
            d = json.loads(body)
            s = Session(str(d["u"]), str(d["r"]), d.get("n"), str(d["s"]), float(d["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if s.exp < time.time() or s.sid in self._revoked:
            return None
        return s

    def revoke(self, s: Session) -> None:
        now = time.time()
        self._revoked[s.sid] = s.exp
        for sid, exp in list(self._revoked.items()):
            if exp < now:
                del self._revoked[sid]


def load_or_create_secret(path: str | Path) -> bytes:
    """The cookie signing key, kept in a file (mode 0600) so sessions survive a restart."""
    p = Path(path)
    if p.exists():
        data = p.read_bytes().strip()
        if len(data) >= 32:
            return data
    p.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_hex(32).encode()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


class LoginThrottle:
    """After `limit` failed logins for a name (or from an address) within `window_s`, refuse for `lock_s`."""

    def __init__(self, limit: int = 5, window_s: float = 60.0, lock_s: float = 30.0) -> None:
        self.limit, self.window_s, self.lock_s = limit, window_s, lock_s
        self._fails: dict[str, list[float]] = {}

    def blocked(self, *keys: str) -> float:
        now = time.time()
        worst = 0.0
        for k in keys:
            f = [t for t in self._fails.get(k, []) if now - t < self.window_s + self.lock_s]
            self._fails[k] = f
            if len(f) >= self.limit:
                worst = max(worst, f[-1] + self.lock_s - now)
        return max(0.0, worst)

    def failed(self, *keys: str) -> None:
        now = time.time()
        for k in keys:
            self._fails.setdefault(k, []).append(now)

    def ok(self, *keys: str) -> None:
        for k in keys:
            self._fails.pop(k, None)


def create_demo_users(path: str | Path, unit_ids: list[str], listing: str | Path) -> dict[str, str]:
    """For a first `patrollink run`: an operator, a supervisor and one account per unit, with random
    passwords, written to the users file (hashes) and to `listing` (plain, mode 0600) once.
    Returns {username: password}; nothing is done (and {} returned) when the users file exists."""
    p = Path(path)
    if p.exists():
        return {}
    creds: dict[str, str] = {"operator": secrets.token_urlsafe(9), "supervisor": secrets.token_urlsafe(9)}
    users = [
        {"username": "operator", "role": "operator", "password": hash_password(creds["operator"])},
        {"username": "supervisor", "role": "supervisor", "password": hash_password(creds["supervisor"])},
    ]
    for uid in unit_ids:
        creds[uid] = secrets.token_urlsafe(9)
        users.append({"username": uid, "role": "unit", "unit": uid, "password": hash_password(creds[uid])})
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# PatrolLink demo accounts made by `patrollink run`; passwords in the listing next to it.\n")
        yaml.safe_dump({"users": users}, f, sort_keys=False)
    lp = Path(listing)
    fd = os.open(lp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# username  password  (demo accounts; delete this file once noted)\n")
        for k, v in creds.items():
            f.write(f"{k}  {v}\n")
    return creds
