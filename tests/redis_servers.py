"""redis-server processes a test owns: stopped and started again on the same port and AOF folder,
or TLS-only with a CA and certificates made by openssl."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cluster.local import free_port, wait_for_port


@dataclass
class OwnedRedis:
    directory: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    def start(self) -> "OwnedRedis":
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make setup installs it)"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", *self.extra],
            stdout=open(self.directory / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_for_port(self.listen_port, 20, "redis-server", self.process.pid)
        return self

    @property
    def listen_port(self) -> int:
        return self.tls_port if self.tls_port else self.port

    @property
    def tls_port(self) -> int | None:
        return int(self.extra[self.extra.index("--tls-port") + 1]) if "--tls-port" in self.extra else None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # a clean shutdown: the AOF is synced
            self.process.wait(20)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, and server and client certificates it signed (server: 127.0.0.1 and localhost)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("ca.crt", "ca.key", "server.crt", "server.key",
                                                  "client.crt", "client.key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=segq test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt")
    return paths


def tls_redis(directory: Path) -> tuple[OwnedRedis, str]:
    """A TLS-only redis-server that wants client certificates, and the rediss:// URL that reaches it."""
    certs = make_certificates(directory / "certs")
    tls_port = free_port()
    server = OwnedRedis(directory / "data", port=0, extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs["server.crt"]),
        "--tls-key-file", str(certs["server.key"]), "--tls-ca-cert-file", str(certs["ca.crt"])]).start()
    url = (f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['ca.crt']}"
           f"&ssl_certfile={certs['client.crt']}&ssl_keyfile={certs['client.key']}")
    return server, url
