"""fedlab_utils.deploy.pki: the throwaway PKI of a federation, its files and what they say, and notebook
07's SAN exercise check (both ways)."""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedlab_utils.checks import deployment
from fedlab_utils.deploy import certificate_sans, certificate_summary, make_pki, public_key_fingerprint
from fedlab_utils.lessons.deployment import san_allows


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki") / "fed", 2, ["203.0.113.5", "fl.example.org"])


def test_server_certificate_is_signed_by_the_ca_and_names_every_san(pki):
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer does not match
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate_sans(pki.server_cert) == ["localhost", "127.0.0.1", "::1", "203.0.113.5", "fl.example.org"]
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey) and server.public_key().curve.name == "secp384r1"
    summary = certificate_summary(pki.server_cert)
    assert summary["issuer"] == ca.subject.rfc4514_string() and not summary["is_ca"]


def test_supernode_keys_are_p384_openssh_pairs_and_private_files_are_0600(pki):
    assert len(pki.supernode_keys) == 2
    for key, pub in zip(pki.supernode_keys, pki.supernode_public_keys):
        private = serialization.load_ssh_private_key(key.read_bytes(), None)  # what flower-supernode loads
        public = serialization.load_ssh_public_key(pub.read_bytes())  # what flwr supernode register loads
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
        assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        blob = base64.b64decode(pub.read_text().split()[1])
        assert public_key_fingerprint(pub) == "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert len(pki.private_files()) == 4
    for path in pki.private_files():
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (pki.ca_cert, pki.server_cert, *pki.supernode_public_keys):
        assert path.stat().st_mode & 0o077 != 0o077 and b"PRIVATE" not in path.read_bytes()
    assert pki.folder.stat().st_mode & 0o777 == 0o700


def test_every_federation_gets_new_keys(pki, tmp_path):
    other = make_pki(tmp_path / "other", 1)
    assert other.supernode_public_keys[0].read_bytes() != pki.supernode_public_keys[0].read_bytes()
    assert other.ca_cert.read_bytes() != pki.ca_cert.read_bytes()


@pytest.mark.parametrize("kwargs, match", [
    ({"supernodes": 0}, "supernodes=0"), ({"supernodes": True}, "supernodes=True"),
    ({"supernodes": 1, "sans": ["a b"]}, "san='a b'"), ({"supernodes": 1, "sans": [""]}, "san=''"),
    ({"supernodes": 1, "sans": ["host:9092"]}, "san='host:9092'"),
])
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_pki(tmp_path / "x", **kwargs)


def test_private_keys_never_go_into_the_repo():
    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(ValueError, match="inside the course folder"):
        make_pki(repo / "pki-test-should-not-exist", 1)
    assert not (repo / "pki-test-should-not-exist").exists()


def test_deploy_pki_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fedlab_utils", "deploy", "pki", "--out", str(tmp_path / "p"),
                          "--supernodes", "3", "--san", "203.0.113.5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert certificate_sans(tmp_path / "p" / "server.pem")[-1] == "203.0.113.5"
    assert sorted(p.name for p in (tmp_path / "p").glob("supernode-*")) == [
        "supernode-0", "supernode-0.pub", "supernode-1", "supernode-1.pub", "supernode-2", "supernode-2.pub"]
    bad = subprocess.run([sys.executable, "-m", "fedlab_utils", "deploy", "pki", "--out", str(tmp_path / "q"),
                          "--supernodes", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("deploy pki: error: supernodes=0")


@pytest.mark.parametrize("sans, address, expected", [
    (["localhost", "127.0.0.1", "::1"], "127.0.0.1:9092", True),
    (["localhost", "127.0.0.1", "::1"], "[::1]:9092", True),
    (["localhost", "127.0.0.1", "::1"], "[0:0::1]:9092", True),  # the same IPv6 address, written longer
    (["localhost"], "127.0.0.1:9092", False),
    (["127.0.0.1"], "localhost:9092", False),
    (["fl.example.org"], "FL.example.ORG:1", True),
    (["*.example.org"], "fl.example.org:1", True),
    (["*.example.org"], "a.fl.example.org:1", False),
    (["*.example.org"], "example.org:1", False),
    (["203.0.113.5"], "203.0.113.50:9092", False),
    (["203.0.113.5"], "203.0.113.5", True),
])
def test_san_allows_by_hand(sans, address, expected):
    assert san_allows(sans, address) is expected


# ----------------------------------------------------------------------------- notebook 07's SAN exercise
def test_check_can_connect_accepts_the_rule():
    deployment.check_can_connect(san_allows)

    def as_ip(text):
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None

    def by_hand(sans, address):  # a student's version, without wildcards (the cases have none)
        host = address[1:address.index("]")] if address.startswith("[") else address.rsplit(":", 1)[0]
        if as_ip(host) is None:
            return host.lower() in [s.lower() for s in sans]
        return any(as_ip(s) == as_ip(host) for s in sans)

    deployment.check_can_connect(by_hand)


@pytest.mark.parametrize("wrong", [
    lambda sans, address: address in sans,  # forgot to strip the port
    lambda sans, address: address.rsplit(":", 1)[0] in sans,  # case-sensitive, and '[::1]' keeps its brackets
    lambda sans, address: address.rsplit(":", 1)[0].strip("[]").lower() in [s.lower() for s in sans]
    or ("localhost" in sans and address.startswith(("127.", "[::1]"))),  # thinks localhost covers 127.0.0.1
    lambda sans, address: True,  # "TLS always connects"
    lambda sans, address: "yes",  # not a bool
])
def test_check_can_connect_rejects_wrong_rules(wrong):
    with pytest.raises(AssertionError):
        deployment.check_can_connect(wrong)


def test_the_notebooks_san_solution_passes_its_check():
    import nbformat

    from fedlab_utils.course import NOTEBOOK_DIR

    nb = nbformat.read(NOTEBOOK_DIR / "07_deployment.ipynb", as_version=4)
    [cell] = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "07-ex-san-solution"]
    namespace = {"ipaddress": ipaddress}
    exec(cell.source, namespace)  # the model answer, as the notebook holds it
    deployment.check_can_connect(namespace["my_can_connect"])
