"""API keys per client, stored hashed (SHA-256) in a YAML file; the plain key is shown once at creation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Client:
    name: str
    key_sha256: str
    models: tuple[str, ...] = ()  # served model aliases this client may call; () = none
    requests_per_minute: int = 60
    max_request_bytes: int = 32_000
    allowed_parameters: tuple[str, ...] = ()  # privileged request parameters this key may use (n, logprobs, ...)
    max_messages: int = 64  # messages per chat request
    max_tokens: int = 1024  # completion tokens per request (also the default when a request names none)
    max_concurrent: int = 8  # requests of this client being answered at once (more get 429)
    reviewer: bool = False  # may approve or reject other clients' feedback on its models


@dataclass
class KeyRing:
    clients: list[Client] = field(default_factory=list)

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> "KeyRing":
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls([Client(name=c["name"], key_sha256=c["key_sha256"], models=tuple(c.get("models", [])),
                               requests_per_minute=int(c.get("requests_per_minute", 60)),
                               max_request_bytes=int(c.get("max_request_bytes", 32_000)),
                               allowed_parameters=tuple(c.get("allowed_parameters", [])),
                               max_messages=int(c.get("max_messages", 64)), max_tokens=int(c.get("max_tokens", 1024)),
                               max_concurrent=int(c.get("max_concurrent", 8)), reviewer=bool(c.get("reviewer", False)))
                        for c in data.get("clients", [])])
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid API key file ({err}); expected clients: [{{name, key_sha256, models}}]") from err

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"clients": [{"name": c.name, "key_sha256": c.key_sha256, "models": list(c.models),
                             "requests_per_minute": c.requests_per_minute, "max_request_bytes": c.max_request_bytes,
                             "allowed_parameters": list(c.allowed_parameters), "max_messages": c.max_messages,
                             "max_tokens": c.max_tokens, "max_concurrent": c.max_concurrent, "reviewer": c.reviewer}
                            for c in self.clients]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)

    def add(self, name: str, models: list[str], requests_per_minute: int = 60, max_request_bytes: int = 32_000,
            allowed_parameters: tuple[str, ...] = (), max_messages: int = 64, max_tokens: int = 1024,
            max_concurrent: int = 8, reviewer: bool = False) -> str:
        """Create (or rotate) `name`'s key; returns the plain key, which is not stored."""
        key = "tf-" + secrets.token_urlsafe(24)
        self.clients = [c for c in self.clients if c.name != name]
        self.clients.append(Client(name, self.hash(key), tuple(models), requests_per_minute, max_request_bytes,
                                   tuple(allowed_parameters), max_messages, max_tokens, max_concurrent, reviewer))
        return key

    def authenticate(self, key: str | None) -> Client | None:
        if not key:
            return None
        digest = self.hash(key)
        return next((c for c in self.clients if hmac.compare_digest(c.key_sha256, digest)), None)
