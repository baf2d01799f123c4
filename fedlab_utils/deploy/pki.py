"""A throwaway public-key infrastructure for one Flower federation, made with ``cryptography``.

Two separate mechanisms keep strangers out of a federation, and both need keys:

* **TLS** encrypts every byte between SuperNodes and the SuperLink and proves to each SuperNode
  that it talks to the real SuperLink.  The SuperLink holds a certificate signed by a CA; each
  SuperNode trusts that CA (``flower-supernode --root-certificates ca.crt``) and checks that the
  address it dialled is one of the certificate's *subject alternative names* (SANs).
* **SuperNode authentication** proves to the SuperLink that a SuperNode is one of *its* devices.
  Each SuperNode has an ECDSA P-384 key pair (OpenSSH format, as ``ssh-keygen -t ecdsa -b 384``
  writes it); the SuperLink, started with ``--enable-supernode-auth``, serves only nodes whose
  public key was registered beforehand with ``flwr supernode register``.

:func:`make_pki` writes all of it into one folder: the CA's certificate (public), the server's
certificate and key, and one key pair per SuperNode.  Private keys are written with mode 0600,
atomically, and never into the course's own folder.  Every key is new, so a federation's keys
are worthless to the next one.  CLI: ``python -m fedlab_utils deploy pki --out DIR --supernodes N
--san 203.0.113.5``.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from fedlab_utils.files import atomic_write_bytes
from fedlab_utils.lessons.deployment import is_ip

__all__ = ["PKI", "make_pki", "DEFAULT_SANS", "certificate_sans", "certificate_summary", "public_key_fingerprint",
           "PRIVATE_MODE"]

DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
PRIVATE_MODE = 0o600
CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE = "ca.crt", "server.pem", "server.key"
CA_KEY_FILE = "ca.key"
VALID_DAYS = 30
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PKI:
    """The files of one federation's PKI (all paths inside :attr:`folder`)."""

    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    supernode_keys: tuple[Path, ...]
    sans: tuple[str, ...]

    @property
    def supernode_public_keys(self) -> tuple[Path, ...]:
        """``supernode-<i>.pub`` next to each private key (what ``flwr supernode register`` reads)."""
        return tuple(key.with_name(key.name + ".pub") for key in self.supernode_keys)

    def private_files(self) -> tuple[Path, ...]:
        """Every private key of the federation (mode 0600): the CA's, the server's, each SuperNode's."""
        return (self.folder / CA_KEY_FILE, self.server_key, *self.supernode_keys)


def _general_name(san: str):
    """A SAN as an ``IPAddress`` entry when it parses as one, else a ``DNSName``."""
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _check_san(san: str) -> str:
    text = str(san).strip()
    if not text or any(ch.isspace() for ch in text) or "/" in text or ":" in text and not is_ip(text):
        raise ValueError(f"san={san!r} is invalid; valid: a host name (e.g. fl.example.org) or an IP address "
                         f"(e.g. 203.0.113.5 or ::1)")
    return text


def _check_out(out: Path) -> Path:
    """Refuse a folder inside the course's own tree: private keys never go into the repo."""
    resolved = out.resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise ValueError(f"out={str(out)!r} is inside the course folder {REPO_ROOT}; private keys must not land "
                         f"in the repository; valid: a folder outside it (e.g. a temporary folder)")
    return resolved


def make_pki(out: str | Path, supernodes: int, sans: tuple[str, ...] | list[str] = (), *,
             valid_days: int = VALID_DAYS) -> PKI:
    """Write a fresh CA, a server certificate and ``supernodes`` SuperNode key pairs into ``out``.

    The server certificate's SANs are ``localhost``, ``127.0.0.1``, ``::1`` and each of ``sans``
    (the addresses the SuperNodes will dial, e.g. the server's public IP).  Keys are ECDSA P-384.
    Files: ``ca.crt``/``ca.key``, ``server.pem``/``server.key``, ``supernode-<i>`` (OpenSSH
    private key) and ``supernode-<i>.pub`` (OpenSSH public key).  Private keys get mode 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not isinstance(supernodes, int) or isinstance(supernodes, bool) or supernodes < 1:
        raise ValueError(f"supernodes={supernodes!r} is invalid; valid: an int ≥ 1 (one key pair per SuperNode)")
    if not isinstance(valid_days, int) or valid_days < 1:
        raise ValueError(f"valid_days={valid_days!r} is invalid; valid: an int ≥ 1")
    all_sans = tuple(dict.fromkeys((*DEFAULT_SANS, *(_check_san(s) for s in sans))))
    folder = _check_out(Path(out))
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = dt.datetime.now(dt.timezone.utc)
    pem = serialization.Encoding.PEM
    no_password = serialization.NoEncryption()

    def private_pem(key) -> bytes:
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, no_password)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedlab federation CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=valid_days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, all_sans[0])]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=valid_days))
                   .add_extension(x509.SubjectAlternativeName([_general_name(s) for s in all_sans]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .sign(ca_key, hashes.SHA384()))
    atomic_write_bytes(folder / CA_KEY_FILE, private_pem(ca_key), PRIVATE_MODE)
    atomic_write_bytes(folder / CA_FILE, ca_cert.public_bytes(pem), 0o644)
    atomic_write_bytes(folder / SERVER_KEY_FILE, private_pem(server_key), PRIVATE_MODE)
    atomic_write_bytes(folder / SERVER_CERT_FILE, server_cert.public_bytes(pem), 0o644)
    keys = []
    for i in range(supernodes):
        key = ec.generate_private_key(ec.SECP384R1())
        path = folder / f"supernode-{i}"
        atomic_write_bytes(path, key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, no_password), PRIVATE_MODE)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        atomic_write_bytes(path.with_name(path.name + ".pub"), public + f" supernode-{i}\n".encode(), 0o644)
        keys.append(path)
    return PKI(folder, folder / CA_FILE, folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE, tuple(keys), all_sans)


def certificate_sans(cert_path: str | Path) -> list[str]:
    """The subject alternative names of a PEM certificate, as strings."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def certificate_summary(cert_path: str | Path) -> dict:
    """Subject, issuer, validity, key type and SANs of a PEM certificate (public facts only)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = cert.public_key()
    try:
        sans = certificate_sans(cert_path)
    except x509.ExtensionNotFound:
        sans = []
    ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "is_ca": ca, "key": f"{type(key).__name__.replace('_', '')} {getattr(key, 'curve', None) and key.curve.name}",
            "not_valid_after": cert.not_valid_after_utc.isoformat(timespec="seconds"), "sans": sans}


def public_key_fingerprint(pub_path: str | Path) -> str:
    """``SHA256:<base64>`` of an OpenSSH public key, as ``ssh-keygen -lf`` prints it."""
    import base64
    import hashlib

    blob = base64.b64decode(Path(pub_path).read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
