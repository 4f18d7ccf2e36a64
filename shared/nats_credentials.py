"""NATS credentials the way ``deploy/nats/accounts.conf`` takes them, and what to say when they are wrong.

The servers hold no password: each password user (orchestrator, ingest, operator) is a bcrypt hash
in the servers' environment, ``SWITCHBOARD_NATS_<USER>_PASSWORD_HASH``; the password itself is only
on its client (``NATS_USER`` + ``NATS_PASSWORD``). Each worker pool is an nkey user of its own
(issue 17: a pool's workers may publish only its subjects): the servers have its public key
(``SWITCHBOARD_NATS_WORKER_<POOL>_NKEY``, :func:`worker_nkey_variable`), each of its workers the
seed (``NATS_NKEY_SEED_FILE``).

Why hashes: nats-server reads ``password: $VAR`` by parsing the variable's value as configuration.
A password such as ``-abc`` stops the server ("Expected a digit"), ``123`` or ``true`` too (it is
read as a number or a boolean), and ``x}``, ``" x"``, ``"x"`` or ``$OTHER`` silently become another
password. A ``$2a$`` bcrypt hash is read back unchanged whatever the password was (the parser
special-cases it and its alphabet holds nothing else the parser treats specially). The same hash
written ``$2b$`` or ``$2y$`` (Python's bcrypt, htpasswd) is not: change the prefix to ``$2a$``.

Nothing here ever puts a secret into a message: problems name the variable, never its value.

Make a hash (the password on stdin, never on the command line)::

    switchboard nats-hash < password-file
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import nkeys  # type: ignore[import-untyped]

from shared.settings import NatsSettings

PASSWORD_USERS = ("orchestrator", "ingest", "operator")
# The servers' variables with the worker pools' public nkeys, one per pool (accounts.conf).
WORKER_NKEY_VARIABLES = "SWITCHBOARD_NATS_WORKER_<POOL>_NKEY"
_WORKER_NKEY_VARIABLE = re.compile(r"SWITCHBOARD_NATS_WORKER_[A-Z0-9_]+_NKEY")
DEFAULT_COST = 11  # what `nats server passwd` uses
MAX_PASSWORD_BYTES = 72  # bcrypt ignores the rest

_BCRYPT_HASH = re.compile(r"\$2a\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_OTHER_BCRYPT = re.compile(r"\$2[by]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_PUBLIC_USER_NKEY = re.compile(r"U[A-Z2-7]{55}")
_HASH_HOWTO = "switchboard nats-hash < password-file (or: nats server passwd)"


def hash_variable(user: str) -> str:
    """The servers' variable with ``user``'s bcrypt hash (deploy/nats/accounts.conf)."""
    return f"SWITCHBOARD_NATS_{user.upper()}_PASSWORD_HASH"


def worker_nkey_variable(pool: str) -> str:
    """The servers' variable with ``pool``'s public nkey: the pool id upper case, '-' as '_'."""
    return f"SWITCHBOARD_NATS_WORKER_{pool.upper().replace('-', '_')}_NKEY"


def password_variable(user: str) -> str:
    """The deployment's variable (compose .env, Kubernetes Secret) with ``user``'s password."""
    return f"SWITCHBOARD_NATS_{user.upper()}_PASSWORD"


class CredentialError(ValueError):
    """A credential that cannot be used; the message names it, never its value."""


@dataclass(frozen=True, slots=True)
class CredentialProblem:
    variable: str
    problem: str
    fix: str


# ------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------


def hash_problem(value: str | None) -> str | None:
    """Why ``value`` cannot be a server's password hash, or None when nats-server reads it as is."""
    if not value:
        return "is not set"
    if _BCRYPT_HASH.fullmatch(value):
        return None
    if _OTHER_BCRYPT.fullmatch(value):
        return (
            f"is a ${value[1:3]}$ bcrypt hash: nats-server reads only $2a$ hashes from its environment "
            f"(a ${value[1:3]}$ one stops it); write the same hash with $2a$ in place of ${value[1:3]}$"
        )
    if value.startswith("$2"):
        return "looks like a bcrypt hash but is not one ($2a$, a two-digit cost, $, 53 characters)"
    return (
        "is not a bcrypt hash: it must hold the $2a$ bcrypt hash of the password, never the password "
        "(nats-server reads a password in its environment as configuration: it may stop or change it)"
    )


def public_nkey_problem(value: str | None) -> str | None:
    """Why ``value`` is not a public user nkey (``U...``), or None."""
    if not value:
        return "is not set"
    if value.startswith("SU"):
        return "holds a seed (the secret): it must hold the public key, U... (nk -inkey SEED_FILE -pubout)"
    if not _PUBLIC_USER_NKEY.fullmatch(value):
        return "is not a public user nkey (U and 55 characters A-Z, 2-7)"
    raw = base64.b32decode(value)
    if int.from_bytes(raw[-2:], "little") != nkeys.crc16(raw[:-2]):
        return "is not a public user nkey (its checksum is wrong: a character was changed or lost)"
    return None


def seed_public_key(path: Path) -> str:
    """The public key of the user seed in ``path``; :class:`CredentialError` naming what is wrong."""
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise CredentialError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    seed = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("SU")), "")
    try:
        return str(nkeys.from_seed(seed.encode()).public_key.decode())
    except Exception:
        raise CredentialError(f"{path} holds no user nkey seed (a line SU...)") from None


# ------------------------------------------------------------------------------------------------
# bcrypt
# ------------------------------------------------------------------------------------------------


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """The ``$2a$`` bcrypt hash of ``password``, the form nats-server reads from its environment."""
    if not 4 <= cost <= 31:
        raise ValueError("bcrypt cost must be 4..31")
    # Made as $2b$ (the algorithm without crypt_blowfish's $2a$ "safety" twist for 8-bit passwords,
    # which Go's bcrypt in nats-server does not have), written as $2a$: for Go they are the same.
    made = bcrypt.hashpw(_password_bytes(password), bcrypt.gensalt(cost, b"2b")).decode()
    return "$2a$" + made.removeprefix("$2b$")


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$2a$`` bcrypt hash) is the hash of ``password``."""
    if not _BCRYPT_HASH.fullmatch(hashed):
        return False
    try:
        data = _password_bytes(password)
    except CredentialError:
        return False
    return bool(bcrypt.checkpw(data, ("$2b$" + hashed.removeprefix("$2a$")).encode()))


def _password_bytes(password: str) -> bytes:
    data = password.encode()
    if not data:
        raise CredentialError("the password is empty")
    if b"\0" in data:
        raise CredentialError("the password holds a NUL character")
    if len(data) > MAX_PASSWORD_BYTES:
        raise CredentialError(
            f"the password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)"
        )
    return data


# ------------------------------------------------------------------------------------------------
# What to say
# ------------------------------------------------------------------------------------------------


def describe_auth(settings: NatsSettings) -> str | None:
    """How a client authenticates, in words (no secret), or None without credentials."""
    if settings.creds_file:
        return f"the credentials file NATS_CREDS_FILE ({settings.creds_file})"
    if settings.nkey_seed_file:
        return f"the nkey seed in NATS_NKEY_SEED_FILE ({settings.nkey_seed_file})"
    if settings.user:
        return (
            f"user {settings.user!r} with NATS_PASSWORD" if settings.password else f"user {settings.user!r}"
        )
    if settings.token:
        return "the token in NATS_TOKEN"
    return None


def refused_hint(settings: NatsSettings) -> str:
    """What to check when the servers answer "authorization violation" (variables, never values)."""
    if settings.creds_file:
        return f"the servers refused the user in NATS_CREDS_FILE ({settings.creds_file})"
    if settings.nkey_seed_file:
        return (
            "the servers refused the nkey seed in NATS_NKEY_SEED_FILE: its public key "
            f"(nk -inkey FILE -pubout) must be the servers' {WORKER_NKEY_VARIABLES} of this worker's pool"
        )
    user = settings.user
    if user and not settings.password:
        return f"NATS_USER is {user!r} but NATS_PASSWORD is not set"
    if user in PASSWORD_USERS:
        return (
            f"the servers refused user {user!r}: NATS_PASSWORD must be the password whose bcrypt hash the "
            f"servers have in {hash_variable(user)} (deploy/nats/accounts.conf; same password as "
            f"{password_variable(user)})"
        )
    if user:
        return (
            f"the servers know no user {user!r} with this password: NATS_USER must be one of "
            f"{', '.join(PASSWORD_USERS)} (deploy/nats/accounts.conf), or use NATS_NKEY_SEED_FILE"
        )
    if settings.token:
        return "the servers refused NATS_TOKEN"
    return (
        "the servers require credentials: set NATS_USER and NATS_PASSWORD, or NATS_NKEY_SEED_FILE "
        "(deploy/nats/accounts.conf)"
    )


def inspect_credentials(settings: NatsSettings, env: Mapping[str, str]) -> list[CredentialProblem]:
    """Credentials in this process's reach that cannot work; no network, bounded (bcrypt checks).

    The servers' variables are checked only where they are in ``env`` (e.g. an operator who runs
    ``switchboard doctor`` with the deployment's env file); then also whether each hash is the hash
    of the password beside it.
    """
    problems: list[CredentialProblem] = []
    password = settings.password.get_secret_value() if settings.password else None
    for user in PASSWORD_USERS:
        name = hash_variable(user)
        if name not in env:
            continue
        hashed = env[name]
        problem = hash_problem(hashed)
        if problem:
            fix = (
                "write it with $2a$ in place of its first four characters (the same hash)"
                if _OTHER_BCRYPT.fullmatch(hashed)
                else f"put the hash there: {_HASH_HOWTO}"
            )
            problems.append(CredentialProblem(name, problem, fix))
            continue
        plain = env.get(password_variable(user))
        if plain and not verify_password(plain, hashed):
            problems.append(
                CredentialProblem(
                    name,
                    f"is not the bcrypt hash of {password_variable(user)}: user {user!r} will be refused",
                    f"hash that password again: {_HASH_HOWTO}",
                )
            )
        if settings.user == user and password and plain != password and not verify_password(password, hashed):
            problems.append(
                CredentialProblem(
                    "NATS_PASSWORD",
                    f"is not the password of {name} (user {user!r}): the servers will refuse it",
                    f"set NATS_PASSWORD to {user!r}'s password, or hash it anew into {name}",
                )
            )
    if password and _BCRYPT_HASH.fullmatch(password):
        problems.append(
            CredentialProblem(
                "NATS_PASSWORD",
                "holds a bcrypt hash: a client sends the password itself; only the servers have the hash",
                f"set NATS_PASSWORD to the password; the hash belongs in the servers' "
                f"{hash_variable(settings.user or 'USER')}",
            )
        )
    if settings.user and not password and not (settings.nkey_seed_file or settings.creds_file):
        problems.append(
            CredentialProblem(
                "NATS_PASSWORD", f"is not set, but NATS_USER is ({settings.user!r})", "set NATS_PASSWORD too"
            )
        )
    pool_keys: dict[str, str] = {}
    for name in sorted(n for n in env if _WORKER_NKEY_VARIABLE.fullmatch(n)):
        if problem := public_nkey_problem(env[name]):
            problems.append(
                CredentialProblem(
                    name, problem, "put the pool seed's public key there: nk -inkey pool.nk -pubout"
                )
            )
        else:
            pool_keys[name] = env[name]
    if settings.nkey_seed_file:
        try:
            public = seed_public_key(settings.nkey_seed_file)
        except CredentialError as err:
            problems.append(
                CredentialProblem(
                    "NATS_NKEY_SEED_FILE", str(err), "point it at the worker pool's seed file (nk -gen user)"
                )
            )
        else:
            if pool_keys and public not in pool_keys.values():
                problems.append(
                    CredentialProblem(
                        "NATS_NKEY_SEED_FILE",
                        f"holds a seed whose public key is none of the pools' {WORKER_NKEY_VARIABLES} "
                        f"({', '.join(pool_keys)}): the servers will refuse it",
                        f"set the pool's variable to: nk -inkey {settings.nkey_seed_file} -pubout",
                    )
                )
    return problems
