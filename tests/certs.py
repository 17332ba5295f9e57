"""Certificates made in the test with `cryptography`: a CA, the leaves it signs, self-signed ones.

    ca = CertificateAuthority()
    valid = ca.issue("localhost", "127.0.0.1")            # 30 days, trusted through ca.write()
    expiring = ca.issue("localhost", "127.0.0.1", days=3)
    expired = ca.issue("localhost", "127.0.0.1", days=-2)  # expired two days ago
    wrong_host = ca.issue("elsewhere.test")
    untrusted = self_signed("localhost", "127.0.0.1")
    context = valid.server_context(tmp_path)              # an ssl.SSLContext for a test server
    ca_file = ca.write(tmp_path)                          # PEM file for a client's trust store

Names that parse as IP addresses become IP subject alternative names, the others DNS names;
the first name is also the subject's common name. EC P-256 keys: fast to make in every test.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 30.0


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forewarn tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alt_names(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _validity(days: float) -> tuple[datetime.datetime, datetime.datetime]:
    """(not before, not after): a certificate expired `-days` ago started well before that."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_after = now + datetime.timedelta(days=days)
    return min(now, not_after) - datetime.timedelta(days=1), not_after


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> float:
        """The end of validity, in seconds since the epoch."""
        return self.cert.not_valid_after_utc.timestamp()

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str = "server") -> tuple[Path, Path]:
        """(certificate file, key file), PEM, in `directory`."""
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(self.cert_pem())
        key_file.write_bytes(self.key_pem())
        return cert_file, key_file

    def server_context(self, directory: Path, stem: str = "server") -> ssl.SSLContext:
        """A server-side TLS context presenting this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.write(directory, stem))
        return context


def _leaf(
    subject: x509.Name, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey, names: tuple[str, ...], days: float,
) -> x509.Certificate:  # fmt: skip
    not_before, not_after = _validity(days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(_alt_names(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


class CertificateAuthority:
    """A root CA that signs leaves; trust it with `write()` as a client's CA file."""

    def __init__(self, common_name: str = "forewarn test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity(3650)
        name = _name(common_name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, *names: str, days: float = DEFAULT_DAYS) -> Issued:
        """A leaf for `names`, valid until `days` from now (negative: expired that long ago)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(names[0] if names else "no name")
        cert = _leaf(subject, self.cert.subject, self.key, key, names, days)
        return Issued(cert, key)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str = "ca") -> Path:
        """The CA certificate as a PEM file in `directory`."""
        path = directory / f"{stem}.crt"
        path.write_bytes(self.pem())
        return path


def self_signed(*names: str, days: float = DEFAULT_DAYS) -> Issued:
    """A leaf that signs itself: no trust store knows it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(names[0] if names else "no name")
    return Issued(_leaf(subject, subject, key, key, names, days), key)
