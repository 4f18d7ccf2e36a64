"""shared.nats_credentials: hashes nats-server reads back unchanged, problems named without values.

(That nats-server really takes these hashes, for every awkward password: the auth drill,
tests/drills/test_drills_security.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nkeys  # type: ignore[import-untyped]
import pytest
from pydantic import SecretStr

from shared import nats_credentials as creds
from shared.settings import NatsSettings

AWKWARD = [
    "-abc-0123456789",
    "12345678901234567890123",
    "1e5xyz-word",
    "true",
    "a b c d e f",
    '"quoted"',
    "pässwörd-ü",
]


def _nkey() -> tuple[str, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(seed).public_key.decode()


@pytest.mark.parametrize("password", AWKWARD)
def test_hash_is_a_2a_hash_of_the_password(password: str) -> None:
    hashed = creds.hash_password(password, cost=4)
    assert hashed.startswith("$2a$04$") and len(hashed) == 60
    assert creds.hash_problem(hashed) is None
    assert creds.verify_password(password, hashed)
    assert not creds.verify_password(password + "x", hashed)


def test_unusable_passwords_are_refused_without_the_value() -> None:
    for password in ("", "x" * 73):
        with pytest.raises(creds.CredentialError) as err:
            creds.hash_password(password, cost=4)
        assert not password or password not in str(err.value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "not set"),
        ("", "not set"),
        ("-abc-0123456789", "not a bcrypt hash"),
        ("123456789", "not a bcrypt hash"),
        ("$2b$04$" + "a" * 53, "$2a$ in place of $2b$"),
        ("$2y$11$" + "a" * 53, "$2a$ in place of $2y$"),
        ("$2a$11$" + "a" * 52, "not one"),
        ("$2a$11$" + "a" * 52 + "}", "not one"),
    ],
)
def test_hash_problems_are_named_without_the_value(value: str | None, words: str) -> None:
    problem = creds.hash_problem(value)
    assert problem is not None and words in problem
    assert not value or value not in problem


def test_public_nkey_problems() -> None:
    seed, public = _nkey()
    assert creds.public_nkey_problem(public) is None
    assert "seed" in (creds.public_nkey_problem(seed) or "")
    assert seed not in (creds.public_nkey_problem(seed) or "")
    changed = public[:-1] + ("A" if public[-1] != "A" else "B")
    assert "checksum" in (creds.public_nkey_problem(changed) or "")
    assert "not a public user nkey" in (creds.public_nkey_problem("UREPLACEWITHTHEPUBLICKEY") or "")


def test_inspect_finds_each_problem_and_never_prints_a_value(tmp_path: Path) -> None:
    seed, _ = _nkey()
    _, other_public = _nkey()
    seed_file = tmp_path / "worker.nk"
    seed_file.write_text(seed + "\n")
    orch_pw, ingest_pw, operator_pw = "-orch-password-1", "0123456789012", "true operator pw"
    env = {
        "SWITCHBOARD_NATS_ORCHESTRATOR_PASSWORD": orch_pw,
        "SWITCHBOARD_NATS_ORCHESTRATOR_PASSWORD_HASH": creds.hash_password(orch_pw, cost=4),  # fine
        "SWITCHBOARD_NATS_INGEST_PASSWORD": ingest_pw,
        "SWITCHBOARD_NATS_INGEST_PASSWORD_HASH": creds.hash_password("another", cost=4),  # not its hash
        "SWITCHBOARD_NATS_OPERATOR_PASSWORD_HASH": operator_pw,  # the password, not a hash
        "SWITCHBOARD_NATS_WORKER_EU_CENTRAL_A_NKEY": other_public,  # not the seed's key
        "SWITCHBOARD_NATS_WORKER_US_EAST_A_NKEY": "SU" + "A" * 54,  # a seed where the public key goes
    }
    settings = NatsSettings(
        user="orchestrator", password=SecretStr("not-" + orch_pw), nkey_seed_file=seed_file
    )
    problems = creds.inspect_credentials(settings, env)
    named = sorted(p.variable for p in problems)
    assert named == sorted(
        [
            "NATS_PASSWORD",  # not the orchestrator's password
            "NATS_NKEY_SEED_FILE",  # its key is no pool's SWITCHBOARD_NATS_WORKER_<POOL>_NKEY
            "SWITCHBOARD_NATS_WORKER_US_EAST_A_NKEY",
            "SWITCHBOARD_NATS_INGEST_PASSWORD_HASH",
            "SWITCHBOARD_NATS_OPERATOR_PASSWORD_HASH",
        ]
    ), problems
    text = " ".join(f"{p.problem} {p.fix}" for p in problems)
    for secret in [*env.values(), "not-" + orch_pw, seed]:
        if secret != other_public:
            assert secret not in text


def test_inspect_is_quiet_when_everything_fits(tmp_path: Path) -> None:
    seed, public = _nkey()
    seed_file = tmp_path / "worker.nk"
    seed_file.write_text(seed)
    env = {
        "SWITCHBOARD_NATS_INGEST_PASSWORD_HASH": creds.hash_password("-x y z", cost=4),
        "SWITCHBOARD_NATS_WORKER_EU_CENTRAL_A_NKEY": _nkey()[1],
        "SWITCHBOARD_NATS_WORKER_US_EAST_A_NKEY": public,  # the seed is us-east-a's
    }
    assert creds.inspect_credentials(NatsSettings(user="ingest", password=SecretStr("-x y z")), env) == []
    assert creds.inspect_credentials(NatsSettings(nkey_seed_file=seed_file), env) == []
    assert creds.inspect_credentials(NatsSettings(), {}) == []


def test_client_side_mistakes(tmp_path: Path) -> None:
    hashed = creds.hash_password("pw", cost=4)
    (hash_as_password,) = creds.inspect_credentials(
        NatsSettings(user="ingest", password=SecretStr(hashed)), {}
    )
    assert hash_as_password.variable == "NATS_PASSWORD" and "hash" in hash_as_password.problem
    assert hashed not in hash_as_password.problem + hash_as_password.fix
    (missing,) = creds.inspect_credentials(NatsSettings(nkey_seed_file=tmp_path / "none.nk"), {})
    assert missing.variable == "NATS_NKEY_SEED_FILE" and "cannot read" in missing.problem
    (no_password,) = creds.inspect_credentials(NatsSettings(user="ingest"), {})
    assert no_password.variable == "NATS_PASSWORD"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (
            NatsSettings(user="ingest", password=SecretStr("s3cret-value")),
            "SWITCHBOARD_NATS_INGEST_PASSWORD_HASH",
        ),
        (NatsSettings(user="nobody", password=SecretStr("s3cret-value")), "NATS_USER must be one of"),
        (NatsSettings(nkey_seed_file=Path("/x/worker.nk")), "SWITCHBOARD_NATS_WORKER_<POOL>_NKEY"),
        (NatsSettings(user="ingest"), "NATS_PASSWORD is not set"),
        (NatsSettings(), "set NATS_USER and NATS_PASSWORD"),
    ],
)
def test_refused_hint_names_what_to_check(settings: NatsSettings, words: str) -> None:
    hint = creds.refused_hint(settings)
    assert words in hint and "s3cret-value" not in hint


def test_hash_command_reads_the_password_on_stdin() -> None:
    password = "-leading dash, spaces and $VAR"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "switchboard"), "nats-hash", "--cost", "4"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    hashed = done.stdout.strip()
    assert creds.verify_password(password, hashed) and password not in done.stdout + done.stderr


def test_each_pool_has_its_own_nkey_variable() -> None:
    assert creds.worker_nkey_variable("eu-central-a") == "SWITCHBOARD_NATS_WORKER_EU_CENTRAL_A_NKEY"
    assert creds.worker_nkey_variable("us_east_a") == "SWITCHBOARD_NATS_WORKER_US_EAST_A_NKEY"
