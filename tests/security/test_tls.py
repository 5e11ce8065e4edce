"""TLS between clients and NATS, with a throwaway CA made here (cryptography)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NatsUnavailable
from jetgrid.coordinator.natsconf import NatsConfig, Secret, ServerTls, render_nats_config
from jetgrid.coordinator.roles import Deployment, service_user
from jetgrid.coordinator.settings import Settings
from jetgrid.natsserver import NatsServer

pytestmark = pytest.mark.integration


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    return key


def _ca(tmp: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = _key(tmp / f"{name}.key")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key, ca_path = _ca(tmp, "jetgrid-test-ca")
    _, _, other = _ca(tmp, "some-other-ca")
    key = _key(tmp / "server.key")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(ca_path, tmp / "server.pem", tmp / "server.key", other)


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """Role users and a TLS block, rendered as `jetgrid nats-config --tls-cert ...` does."""
    store = tmp_path_factory.mktemp("tls")
    users = ((service_user("client"), Secret(value="client-pw")),)
    conf = store / "nats.conf"
    conf.write_text(render_nats_config(NatsConfig(
        deployment=Deployment("tls"), users=users, tls=ServerTls(pki.server_cert, pki.server_key)
    )))  # fmt: skip
    server = NatsServer(store / "nats", conf=conf, port=0)
    server.start()
    yield server
    server.stop()


def _settings(server: NatsServer, ca: Path | None) -> Settings:
    return Settings(nats_url=f"tls://127.0.0.1:{server.port}", nats_user="client",
                    nats_password="client-pw", nats_tls_ca=ca, subject_prefix="tls",
                    nats_connect_timeout_s=1)  # fmt: skip


async def test_a_client_verifies_the_server_with_the_ca_from_settings(
    tls_server: NatsServer, pki: Pki
) -> None:
    nc = (await Bus.connect(_settings(tls_server, pki.ca), name="tls-client")).nc
    try:
        assert nc.is_connected and nc.connected_url.scheme == "tls"
        sub = await nc.subscribe("tls.job.j1.*")
        await nc.publish("tls.job.j1.cancel_requested", b"{}")
        assert (await sub.next_msg(timeout=5)).data == b"{}"
    finally:
        await nc.close()


@pytest.mark.parametrize("which", ["no CA", "another CA"])
async def test_a_server_the_ca_did_not_sign_is_refused(
    tls_server: NatsServer, pki: Pki, which: str
) -> None:
    ca = None if which == "no CA" else pki.other_ca
    settings = _settings(tls_server, ca)
    with pytest.raises(NatsUnavailable, match="Could not connect"):
        await asyncio.wait_for(Bus.connect(settings, name="tls-client"), 30)
