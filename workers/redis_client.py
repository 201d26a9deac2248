"""Redis clients from segq URLs, with the password kept out of every URL that travels.

A segq Redis URL is a redis-py URL (`redis://`, `rediss://` with `ssl_ca_certs=`, `ssl_certfile=`,
`ssl_keyfile=` in its query for TLS) that may also name a `password_file=` in its query: a 0600
file holding the password. Such a URL holds no secret, so it may go into the Ray job's
environment, trial configs and logs. A URL without any password takes it from this node's own
`SEGQ_REDIS_URL` when that names the same server (how a real cluster's nodes get it).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers.exceptions import RedisSettingsError

PASSWORD_FILE = "password_file"
NODE_URL = "SEGQ_REDIS_URL"


def open_redis(url: str, *, retries: int = 3, environ: Mapping[str, str] = os.environ, **options) -> redis.Redis:
    """A client for `url` that retries with exponential backoff (capped at 2 s) on connection errors."""
    plain, password_file = split_password_file(url)
    options.setdefault("socket_connect_timeout", 5)
    options.setdefault("socket_timeout", 10)
    password = url_password(plain) or read_password(password_file) or node_password(plain, environ)
    if password and not url_password(plain):
        options["password"] = password
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries)
    try:
        return redis.Redis.from_url(plain, retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                                    **options)
    except (TypeError, ValueError) as error:
        raise RedisSettingsError(f"Redis URL {public_url(url)}: {error}; see README 'Redis URLs'") from None


def split_password_file(url: str) -> tuple[str, str | None]:
    """The URL without its `password_file` query item, and that item."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password_file = next((value for name, value in query if name == PASSWORD_FILE), None)
    kept = urlencode([(name, value) for name, value in query if name != PASSWORD_FILE], safe="/")
    return urlunsplit(parts._replace(query=kept)), password_file


def read_password(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as error:
        raise RedisSettingsError(f"cannot read the Redis password file {path}: {error.strerror}; "
                          "run `segq up` again or fix password_file= in the Redis URL") from None


def url_password(url: str) -> str | None:
    return urlsplit(url).password


def node_password(url: str, environ: Mapping[str, str]) -> str | None:
    """The password of this node's own SEGQ_REDIS_URL, if that names the same host and port."""
    node_url = environ.get(NODE_URL)
    if not node_url or url_password(url):
        return None
    mine, theirs = urlsplit(url), urlsplit(split_password_file(node_url)[0])
    if (mine.hostname, mine.port) != (theirs.hostname, theirs.port):
        return None
    return theirs.password or read_password(split_password_file(node_url)[1])


def public_url(url: str) -> str:
    """The URL without its password (user names and the query stay): safe to pass around and print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
