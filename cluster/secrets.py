"""Secrets of the embedded default, kept in 0600 files and never on a command line.

- the Redis password: HOME/redis.password, made once by `segq up`; redis-server reads it from a
  0600 config file (HOME/redis/secret.conf), and every client finds it through the
  `password_file=` item of the Redis URL (workers.redis_client), so only its path travels;
- the Ray auth token: Ray's own (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from workers.files import write_atomically
from workers.redis_client import public_url

PASSWORD_FILE = "redis.password"
REDIS_SECRET_CONF = "secret.conf"


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a file only its owner can read (created 0600, never world-readable on the way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, text, mode=0o600)


def redis_password_file(home: Path) -> Path:
    """HOME/redis.password, made with a random password the first time."""
    path = home / PASSWORD_FILE
    if not path.exists() or not path.read_text().strip():
        write_private(path, secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    return path


def redis_secret_config(home: Path, password_file: Path) -> Path:
    """A 0600 redis.conf holding `requirepass`, so the password stays out of `ps`."""
    password = password_file.read_text().strip()
    return write_private(home / "redis" / REDIS_SECRET_CONF, f'requirepass "{password}"\n')


def ray_token_file() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ray_token() -> str | None:
    """The Ray auth token this machine's clients use, or None if there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = ray_token_file()
    return path.read_text().strip() if path.exists() else None


def token_source() -> str:
    """Where the token comes from, for messages (never the token itself)."""
    return "$RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(ray_token_file())


def password_file_url(home: Path, url: str) -> str:
    """`url` with its password moved into a 0600 file under HOME/secrets, named in the URL instead:
    for jobs on the embedded default, whose driver reads HOME on this machine."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    digest = hashlib.sha256(f"{parts.hostname}:{parts.port}:{parts.password}".encode()).hexdigest()[:12]
    path = write_private(home / "secrets" / f"redis-{digest}.password", unquote(parts.password) + "\n")
    public = public_url(url)
    joiner = "&" if urlsplit(public).query else "?"
    return f"{public}{joiner}password_file={quote(str(path), safe='/')}"
