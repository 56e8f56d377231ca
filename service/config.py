"""Settings: every ``SIGNOFF_*`` variable, validated at start (pydantic-settings)."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain import chain

PREFIX = "SIGNOFF_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNOFF_", extra="ignore")

    database_url: str = Field(
        "sqlite:///signoff.db",
        description="Where events are stored: sqlite:///PATH (a file; the default) or "
        "postgresql://USER:PASSWORD@HOST:PORT/DBNAME. sqlite:///:memory: keeps nothing.",
    )
    model: str = Field(
        "",
        description="The default model for agents that name none: 'offline' (deterministic, "
        "no network) or 'openai:MODEL_ID' (any OpenAI-compatible endpoint; OPENAI_API_KEY, "
        "OPENAI_BASE_URL). Empty: openai:gpt-4o-mini when OPENAI_API_KEY is set, else offline.",
    )
    agents: str = Field(
        "agent.demo",
        description="Comma-separated Python modules whose module-level Agent objects are served.",
    )
    host: str = Field("127.0.0.1", description="Address `signoff serve` listens on.")
    port: int = Field(7777, ge=1, le=65535, description="Port `signoff serve` listens on.")
    tool_timeout: float = Field(
        300.0, gt=0,
        description="Seconds a tool may run. A call whose outcome was not recorded by then "
        "(the process died) is in doubt: a person decides, unless the tool is idempotent.",
    )
    model_timeout: float = Field(60.0, gt=0, description="Seconds a model call may take.")
    max_model_turns: int = Field(
        10, ge=1, description="Model turns one request may drive before the run fails.")
    postgres_pool_size: int = Field(10, ge=1, description="PostgreSQL connections per process.")
    group_commit: bool = Field(
        True,
        description="Write the saves of concurrent requests in shared transactions (one "
        "lock and one commit for many; each save still all or nothing, a conflict failing "
        "only its own). Off: one transaction per save.",
    )
    projections: Literal["inline", "off"] = Field(
        "inline",
        description="'inline': each save writes the read models (queue, audit trail) in its "
        "own transaction; the server follows the log for the rest. 'off': `signoff project`"
        " keeps them (PostgreSQL, several API workers); the API still reads them.",
    )
    projection_batch_size: int = Field(
        500, ge=1, le=100_000,
        description="Events a projection applies per transaction when it catches up or is "
        "rebuilt (each page and its tracked position commit together).",
    )

    compress: bool = Field(
        True,
        description="Compress stored events and snapshots (zlib). A store reads both "
        "compressed and uncompressed events, so this can be turned on or off at any time; "
        "an encrypted store is always compressed.",
    )
    cipher_key: str = Field(
        "",
        description="Encrypt stored events (AES-256-GCM, compressed first) with this key: "
        "base64 of 16, 24 or 32 bytes (`signoff keys generate` prints one). Empty: not "
        "encrypted. A store written with a key can only be read with the same key.",
        repr=False,
    )

    @field_validator("cipher_key")
    @classmethod
    def _cipher_key(cls, v: str) -> str:
        if v:
            try:
                size = len(base64.b64decode(v, validate=True))
            except ValueError:
                raise ValueError("must be base64 (`signoff keys generate` prints a key)") \
                    from None
            if size not in (16, 24, 32):
                raise ValueError(f"must decode to 16, 24 or 32 bytes, not {size}")
        return v

    anchor_signing_key: str = Field(
        "",
        description="Sign every anchor (each checkpoint and the head) with this Ed25519 "
        "private key: PEM (`openssl genpkey -algorithm ed25519`) or base64 of its 32 raw "
        "bytes. Give it to the process that keeps the anchors projection (`signoff serve` "
        "with inline projections, or `signoff project`) and to no one else: who has write "
        "access to the database without it cannot make an anchor that verifies. Empty: "
        "anchors are not signed.",
        repr=False,
    )
    anchor_public_key: str = Field(
        "",
        description="Ed25519 public keys (PEM or base64 of 32 raw bytes; comma-separated) "
        "that `signoff audit verify` and GET /audit/verify check every stored anchor's "
        "signature with, beside the signing key's own: an anchor unsigned, or whose "
        "signature holds with none of them, is reported. Set it where the signing key is "
        "not (`signoff audit public-key` prints it), and list a former key here while "
        "anchors signed with it are kept. Both empty: signatures are not checked.",
    )

    @field_validator("anchor_signing_key")
    @classmethod
    def _anchor_signing_key(cls, v: str) -> str:
        if v.strip():
            chain.signing_key(v)  # ValueError: names what is wrong, never the key
        return v

    @field_validator("anchor_public_key")
    @classmethod
    def _anchor_public_key(cls, v: str) -> str:
        for part in v.split(","):
            if part.strip():
                chain.public_key(part)
        return v

    def anchor_signer(self) -> Ed25519PrivateKey | None:
        """The key anchors are signed with, if any."""
        return chain.signing_key(self.anchor_signing_key) if self.anchor_signing_key.strip() \
            else None

    def anchor_public_keys(self) -> list[Ed25519PublicKey]:
        """The public keys anchors' signatures are checked with: the signing key's first,
        if set, then SIGNOFF_ANCHOR_PUBLIC_KEY's (none: signatures are not checked)."""
        signer = self.anchor_signer()
        keys = [signer.public_key()] if signer is not None else []
        seen = {chain.public_text(k) for k in keys}
        for part in self.anchor_public_key.split(","):
            if part.strip() and chain.public_text(key := chain.public_key(part)) not in seen:
                keys.append(key)
                seen.add(chain.public_text(key))
        return keys

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="Least severe log records written (any case). Tool arguments, results, "
        "model output and user input are logged at debug only.",
    )
    log_format: Literal["json", "text", "auto"] = Field(
        "auto",
        description="'json': one JSON object per line (run_id, agent, request_id fields); "
        "'text': one readable line per record; 'auto': text when stderr is a terminal, "
        "else json.",
    )
    ready_max_lag: int = Field(
        1000, ge=0,
        description="GET /ready answers 503 while a projection is more than this many events "
        "behind the event log (0: it must be fully caught up).",
    )

    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="'auto': callers must authenticate once an API key was issued "
        "(`signoff keys create`) or SIGNOFF_JWT_KEY is set, and may not before; "
        "'required': always; 'off': never. Without authentication the service only "
        "listens on a loopback address, unless SIGNOFF_ALLOW_OPEN is true.",
    )
    allow_open: bool = Field(
        False, description="Serve without authentication on an address other than loopback "
        "(a trusted network only).")
    open_hosts: str = Field("localhost,127.0.0.1,[::1]", description="Without authentication, "
        "the names (any port, comma-separated) a request over the network may address (Host).")
    jwt_key: str = Field(
        "", repr=False,
        description="Accept bearer JWTs signed with this key: the shared secret (HS256) or "
        "the identity provider's PEM public key (RS256, ES256). The token's `sub` is the "
        "caller; its role claim (SIGNOFF_JWT_ROLE_CLAIM) the role; `exp` is required.",
    )
    jwt_algorithms: str = Field("HS256", description="Comma-separated JWT algorithms accepted.")
    jwt_audience: str = Field("", description="The `aud` a JWT must carry (empty: not checked).")
    jwt_issuer: str = Field("", description="The `iss` a JWT must carry (empty: not checked).")
    jwt_role_claim: str = Field("role", description="The JWT claim holding the caller's role.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted; larger: 413.")
    max_message_chars: int = Field(
        100_000, ge=1, description="Longest user message a run may start with; longer: 413.")
    max_args_bytes: int = Field(
        65_536, ge=64,
        description="Largest tool arguments, edited arguments, user input or external result "
        "(as JSON) a decision may carry; larger: 413. Also bounds the tool arguments a model "
        "proposes and the results tools return: larger ones are cut and marked as cut.",
    )

    policies: str = Field(
        "",
        description="A file of approval rules (TOML or JSON, see docs/concepts.md, "
        "\"Approval policies\"): by agent, tool and arguments, whether a call needs a "
        "confirmation. The first matching rule decides, before the tool's own "
        "requires_confirmation. Read at start; empty: no rules.",
    )

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: str) -> str:
        from service.policies import load

        load(v)  # a bad file stops the start, naming the rule at fault (PolicyError)
        return v

    expiry_interval: float = Field(
        5.0, ge=0,
        description="Seconds between two sweeps. Each sweep records DecisionExpired for "
        "decisions past their deadline (a tool's decision_timeout) and continues the runs, "
        "and settles runs a crashed process left RUNNING past a deadline (in doubt, or an "
        "idempotent tool run again). Every API process sweeps (exactly one records each "
        "change); 0: this one does not.",
    )

    traces: Literal["", "console", "otlp"] = Field(
        "",
        description="OpenTelemetry traces: '' off; 'otlp' to a collector over OTLP/HTTP "
        "(OTEL_EXPORTER_OTLP_ENDPOINT and the other standard OTEL_* variables apply); "
        "'console' one JSON line per span on stderr. Spans: requests, model calls, tool "
        "executions, saves, with the run id.",
    )

    webhook_attempts: int = Field(
        8, ge=1, le=100,
        description="Attempts at one webhook delivery before it is marked failed.")
    webhook_backoff: float = Field(
        10.0, gt=0,
        description="Seconds before a webhook delivery's second attempt; each further wait "
        "doubles (at most SIGNOFF_WEBHOOK_BACKOFF_MAX), less a random part of up to half.")
    webhook_backoff_max: float = Field(
        3600.0, gt=0, description="Longest wait between two attempts at a webhook delivery.")
    webhook_timeout: float = Field(
        10.0, gt=0,
        description="Seconds a subscriber may take to connect, and then to answer a "
        "webhook delivery; longer: the attempt failed (timeout).")
    webhook_concurrency: int = Field(
        8, ge=1, le=256,
        description="Webhook deliveries in flight at once per process (the sending threads).")
    webhook_hosts: str = Field(
        "",
        description="Comma-separated hosts webhook URLs may name (`hooks.example.com`, or "
        "`*.example.com` for any name under it). Empty: any host. See docs/security.md.",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _metrics_dir(self) -> Settings:
        # prometheus_client's multiprocess mode (several workers): not a SIGNOFF_ variable,
        # but a bad value would otherwise fail in every worker after the start.
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if path is not None and not (Path(path).is_dir() and os.access(path, os.W_OK)):
            raise ValueError("PROMETHEUS_MULTIPROC_DIR must name a writable directory")
        return self

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v and v != "offline" and not (v.startswith("openai:") and len(v) > 7):
            raise ValueError("must be 'offline' or 'openai:MODEL_ID'")
        return v

    def default_model_spec(self) -> str:
        return self.model or ("openai:gpt-4o-mini" if os.environ.get("OPENAI_API_KEY")
                              else "offline")

    def store_address(self) -> str:
        """Where the store is, for messages: the SQLite file, or PostgreSQL's host, port,
        database and user (never the password)."""
        env = _store_env(self)
        if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
            name = env["SQLITE_DBNAME"]
            return ("SQLite in memory" if name.startswith("file::memory:")
                    else f"SQLite file {Path(name).resolve()}")
        return (f"PostgreSQL at {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}, database "
                f"{env['POSTGRES_DBNAME']}, user {env['POSTGRES_USER']}")

    def sqlite_file(self) -> Path | None:
        """The SQLite file the store is kept in; None for PostgreSQL or a store in memory."""
        name = _store_env(self).get("SQLITE_DBNAME")
        return None if name is None or name.startswith("file::memory:") else Path(name)


def problems(error: ValidationError) -> list[str]:
    """One line per bad value, naming its variable (never echoing the value: it may be a
    password in a database URL)."""
    lines = []
    for err in error.errors():
        loc = err.get("loc") or ()
        name = PREFIX + str(loc[0]).upper() if loc else "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"invalid {name}: {msg}")
    return lines


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SIGNOFF_*`` variables that name no setting (a typo is otherwise silently ignored)."""
    environ = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(k for k in environ if k.upper().startswith(PREFIX) and k.upper() not in known)


def load_settings() -> Settings:
    """Settings from the environment; a bad value ends the process (status 2) with one
    line on stderr per bad variable, naming it."""
    try:
        return Settings()
    except ValidationError as e:
        for line in problems(e):
            print(f"signoff: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """Map ``SIGNOFF_DATABASE_URL`` (and ``SIGNOFF_COMPRESS``, ``SIGNOFF_CIPHER_KEY``) onto
    eventsourcing's own persistence settings."""
    env = _store_env(settings)
    kind = "SQLite" if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite" else "Postgres"
    env["APPLICATION_RECORDER_TOPIC"] = f"service.inline:Inline{kind}Recorder"
    env["GROUP_COMMIT"] = "y" if settings.group_commit else "n"
    # Either reads both compressed and uncompressed events; they differ in what they write.
    compress = settings.compress or bool(settings.cipher_key)
    env["COMPRESSOR_TOPIC"] = f"service.compression:{'Zlib' if compress else 'Plain'}"
    if settings.cipher_key:
        env.update(CIPHER_TOPIC="eventsourcing.cryptography:AESCipher",
                   CIPHER_KEY=settings.cipher_key)
    return env


def lean_pool(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a pool that opens one PostgreSQL connection and grows only on demand
    (to the same maximum): the projections' own reader and views, which one thread each
    writes with and a few requests read through. psycopg_pool closes what it opened
    beyond its minimum after 10 idle minutes. Every pool opens its minimum at start, so
    a process's connections at start are the runs' pool plus one per projection."""
    if "POSTGRES_POOL_SIZE" not in env:
        return env
    most = int(env["POSTGRES_POOL_SIZE"]) + int(env.get("POSTGRES_MAX_OVERFLOW", "0"))
    return {**env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": str(most - 1)}


def _store_env(settings: Settings) -> dict[str, str]:
    url = urlsplit(settings.database_url)
    if url.scheme == "sqlite":
        # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:
        path = settings.database_url[len("sqlite:///"):] or "signoff.db"
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path if path != ":memory:" else "file::memory:?cache=shared",
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/") or "signoff",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
        "POSTGRES_MAX_OVERFLOW": str(settings.postgres_pool_size),
        # A pooled connection is checked before it is handed out (one broken by a
        # restart is replaced); a request waits at most 5 s for a connection per attempt
        # (eventsourcing makes 10), a write at most 5 s for the table lock. The API
        # answers 503 at once while the store is out of reach (api/storeguard.py).
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
    }


def reference_table() -> str:
    """The settings as a Markdown table (``docs/configuration.md`` is made from this)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        default = "" if f.default is None else str(f.default)
        rows.append(f"| `SIGNOFF_{name.upper()}` | `{default}` | {f.description or ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference_table(), end="")
