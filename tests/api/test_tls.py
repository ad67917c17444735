"""`--api-remote` over TLS, with a real node process and the CLI's own client: the API answers
on https with the certificate from the command line, which the client verifies (a client that
does not trust it, or speaks plain HTTP, gets nothing); the CLI on the same machine still uses
the Unix socket; plain HTTP beyond loopback is refused before the node starts."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2psched.api.client import ControlClient, NodeUnreachable
from tests.harness.processes import p2psched, running


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key, and that key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2psched test node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "api.crt", folder / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_remote_api_serves_tls_that_the_client_verifies(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    data = tmp_path / "gate"
    tls = ["--api-remote", "--api-tls-cert", str(cert), "--api-tls-key", str(key)]
    with running("gate", "--listen", "127.0.0.1:0", *tls, data=data):
        url = json.loads((data / "api.json").read_text())["url"]
        token = (data / "api.token").read_text().strip()
        assert url.startswith("https://127.0.0.1:")
        with ControlClient(url, token, cafile=cert) as client:
            assert client.get("/v1/gate")["relay"]
        with ControlClient(url, token) as client:  # the system's authorities only
            with pytest.raises(NodeUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                client.get("/v1/node")
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https:", "http:") + "/v1/node", timeout=10)
        assert p2psched("gate", "status", "--data-dir", str(data)).returncode == 0


def test_plain_http_beyond_loopback_is_refused(tmp_path: Path) -> None:
    remote = ["--api-host", "0.0.0.0", "--api-remote", "--data-dir", str(tmp_path / "g")]
    out = p2psched("gate", "--listen", "127.0.0.1:0", *remote)
    assert out.returncode == 2 and "--api-tls-cert" in out.stderr and "ssh -L" in out.stderr
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    junk = ["--api-tls-cert", str(tmp_path / "junk.pem"), "--api-tls-key", str(tmp_path / "x")]
    out = p2psched("gate", "--listen", "127.0.0.1:0", *remote, *junk)
    assert out.returncode == 2 and "junk.pem" in out.stderr
