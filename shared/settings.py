"""Connection settings and secrets, from the environment (and a ``.env`` file when present).

Secrets are ``SecretStr``: ``repr``, ``str``, logs and error messages show ``**********``.
Topology (rules, regions, pools) is not here but in the YAML file, see :mod:`shared.config`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NATS_", extra="ignore")

    url: str = Field(default="nats://127.0.0.1:4222", description="Comma-separated server URLs")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = Field(default=None, description="NATS .creds file (JWT + nkey seed)")
    nkey_seed_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Where replies come back (JetStream acks and API answers, KV reads). With NATS auth, give each
    # component its own prefix and let its user subscribe only there (deploy/nats/accounts.conf):
    # with the shared "_INBOX" any user allowed "_INBOX.>" could read every other one's replies.
    inbox_prefix: str = Field(default="_INBOX", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    # Bounded start-up: fail visibly instead of nats-py's default two-minute silence.
    connect_timeout_s: float = 5.0
    startup_attempts: int = 5
    stream_replicas: int = Field(default=1, ge=1, le=5)

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


class LiveKitSettings(BaseSettings):
    """LiveKit's URL and API key pair. No default key pair (issue 17): livekit-server's dev pair
    (devkey / secret) is public, and an ingest that fell back to it would accept webhooks anyone
    can sign. ``switchboard dev`` passes its own local server's pair to every process it starts."""

    model_config = SettingsConfigDict(env_prefix="LIVEKIT_", extra="ignore")

    url: str = "http://127.0.0.1:7880"
    api_key: str = Field(default="", validation_alias=AliasChoices("LIVEKIT_API_KEY", "api_key"))
    api_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LIVEKIT_API_SECRET", "api_secret")
    )
    # livekit-api 1.2.2 sets no HTTP timeout of its own: every call is wrapped in this.
    request_timeout_s: float = 5.0

    def missing(self) -> list[str]:
        """The variables of the key pair that are not set (the names, never a value)."""
        pair = [("LIVEKIT_API_KEY", self.api_key), ("LIVEKIT_API_SECRET", self.api_secret.get_secret_value())]
        return [name for name, value in pair if not value.strip()]


class Settings(BaseSettings):
    """Everything a Switchboard process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore")

    config: Path = Field(default=Path("switchboard.yaml"), description="Rules, regions and pools")
    log_format: str = Field(default="text", pattern="^(text|json)$")
    log_level: str = "INFO"
    # The orchestrator replica's own region (its NATS cluster's): pools elsewhere are judged across
    # the gateways (orchestrator/pools.py). Unset: one NATS cluster serves every pool.
    region: str | None = None
    # /healthz, /readyz and /metrics of this process; port 0 picks a free one (logged at start).
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    livekit: LiveKitSettings = Field(default_factory=LiveKitSettings)

    def secrets(self) -> list[str]:
        """Every secret value in force, so log redaction can mask them wherever they appear."""
        values = [self.livekit.api_secret, self.nats.password, self.nats.token]
        return [s.get_secret_value() for s in values if s is not None and s.get_secret_value()]
