"""Redis URLs that travel hold no password: the password comes from a 0600 file the URL names, or
from the node's own SEGQ_REDIS_URL, and never goes into a job's environment."""
import os
import stat

import pytest

from cluster.secrets import password_file_url, redis_password_file, redis_secret_config
from jobs.deployment import Deployment
from tests.redis_servers import OwnedRedis
from workers.exceptions import RedisSettingsError
from workers.redis_client import open_redis, public_url, split_password_file


def test_public_url_drops_only_the_password():
    assert public_url("redis://:pw@h:1/0") == "redis://h:1/0"
    assert public_url("rediss://user:pw@h:1/2?ssl_ca_certs=/ca.crt") == "rediss://user@h:1/2?ssl_ca_certs=/ca.crt"
    assert public_url("redis://h:1/0") == "redis://h:1/0"


def test_the_job_environment_never_holds_a_password():
    for embedded in (True, False):
        env = Deployment(redis_url="redis://:s3cret@r:1/0", storage="/s", embedded=embedded).to_env()
        assert "s3cret" not in repr(env) and "SEGQ_REDIS_URL" not in env
    env = Deployment(redis_url="redis://r:1/0?password_file=/h/redis.password", storage="/s", embedded=True).to_env()
    assert env["SEGQ_REDIS_URL"] == "redis://r:1/0?password_file=/h/redis.password"


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    server = OwnedRedis(tmp_path_factory.mktemp("locked"), extra=["--requirepass", "letmein"]).start()
    yield server
    server.stop()


def test_the_password_comes_from_its_file_or_the_nodes_url(locked, tmp_path):
    home = tmp_path / "home"
    url = password_file_url(home, f"redis://:letmein@127.0.0.1:{locked.port}/0")
    password_file = split_password_file(url)[1]
    assert "letmein" not in url and password_file.startswith(str(home / "secrets"))
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    assert open_redis(url).ping()
    bare = f"redis://127.0.0.1:{locked.port}/0"
    assert open_redis(bare, environ={"SEGQ_REDIS_URL": f"redis://:letmein@127.0.0.1:{locked.port}/0"}).ping()
    with pytest.raises(RedisSettingsError, match="nofile"):
        open_redis(f"{bare}?password_file={tmp_path}/nofile")


def test_the_embedded_secret_files_are_private(tmp_path):
    password_file = redis_password_file(tmp_path)
    config = redis_secret_config(tmp_path, password_file)
    for path in (password_file, config):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password_file.read_text().strip() in config.read_text()
    assert redis_password_file(tmp_path).read_text() == password_file.read_text()  # made once
