"""Lesson 07 (deployment) beyond the deploy package: which certificate a TLS client accepts for an
address, and the notebook's parameter table (:data:`RULES_07`).

A SuperNode dials the SuperLink by an address; TLS accepts the server's certificate only when a
Subject Alternative Name matches it (RFC 6125).  The lesson checks the student's rule against
:func:`san_allows`; :mod:`fedlab_utils.deploy.pki` uses :func:`is_ip` to validate the SANs it signs.
"""
from __future__ import annotations

import ipaddress

from fedlab_utils.validation import choice, integer, optional_path, real

__all__ = ["RULES_07", "DATASETS_07", "san_allows", "is_ip"]


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def san_allows(sans: list[str] | tuple[str, ...], address: str) -> bool:
    """Whether a TLS client that dials ``address`` (``host:port``, ``[v6]:port`` or a bare host)
    accepts a certificate with these SANs: an IP must equal an IP SAN, a name must equal a DNS SAN
    (case-insensitive; a ``*.`` wildcard covers exactly one leftmost label), as in RFC 6125."""
    host = _host_of(address)
    if is_ip(host):
        ip = ipaddress.ip_address(host)
        return any(is_ip(s) and ipaddress.ip_address(s) == ip for s in sans)
    host = host.lower().rstrip(".")
    for san in sans:
        if is_ip(san):
            continue
        name = san.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _host_of(address: str) -> str:
    text = str(address).strip()
    if text.startswith("["):
        return text[1:text.index("]")]
    if text.count(":") == 1:
        return text.rsplit(":", 1)[0]
    return text


# ----------------------------------------------------------------------------- notebook 07's parameters
#: The data sets small enough to load in every SuperNode's process within a lesson.
DATASETS_07 = ("mnist5k", "digits", "synthetic")

#: Notebook 07's parameters: each SuperNode is a real process, so the counts stay small.
RULES_07 = {
    "seed": integer(0), "dataset": choice(DATASETS_07), "num_clients": integer(2, 8), "rounds": integer(1, 20),
    "local_epochs": integer(1, 5), "batch_size": integer(1), "lr": real(0.0, low_inclusive=False),
    "alpha": real(0.0, low_inclusive=False), "uplink_bits": integer(1, 16),
    "server_lr": real(0.0, low_inclusive=False), "kill_round": integer(2, 20), "deadline_factor": real(1.0),
    "round_timeout": real(0.0, low_inclusive=False), "device": choice(("cpu", "auto")),
    "results_path": optional_path(),
}
