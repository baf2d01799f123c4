"""The command lines of a secure Flower deployment, written once.

:func:`~fedlab_utils.deploy.local_federation` runs these commands on 127.0.0.1;
:func:`real_machine_commands` renders the same ones for a server and its devices, with only the
addresses changed (see ``docs/deployment.md``): the PKI (:mod:`fedlab_utils.deploy.pki`), the SuperLink
with TLS and SuperNode authentication, ``flwr supernode register`` for each device's public key,
each SuperNode, the app folder (:func:`app_dir`) and ``flwr run``.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from fedlab_utils.deploy.apps import NODE_COUNT_KEY, NODE_PARTITION_KEY, DeploymentConfig
from fedlab_utils.deploy.pki import PKI
from fedlab_utils.i18n import N_, gettext

__all__ = ["CONNECTION", "REAL_PORT", "toml_value", "app_dir", "superlink_command", "supernode_command", "connection_toml", "Step",
           "machine_steps", "real_machine_commands"]

CONNECTION = "fedlab"
REAL_PORT = 9092
APP_MODULE = "fedlab_app"
TLS_DOCS = "https://flower.ai/docs/framework/how-to-enable-tls-connections.html"
AUTH_DOCS = "https://flower.ai/docs/framework/how-to-authenticate-supernodes.html"
DEPLOY_DOCS = "https://flower.ai/docs/framework/deploy.html"


def toml_value(value) -> str:
    """A run-config value as TOML (what ``flwr run --run-config`` and ``pyproject.toml`` read)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def app_dir(folder: str | Path, config: DeploymentConfig) -> Path:
    """Write the Flower app folder ``flwr run`` submits: a ``pyproject.toml`` naming the two
    components of :mod:`fedlab_utils.deploy.apps` and a one-line module that re-exports them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    defaults = "\n".join(f"{k} = {toml_value(v)}" for k, v in config.to_run_config().items())
    (folder / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedlab-deploy"
version = "1.0.0"
description = "Efficient Federated Learning course: its loop's pieces as a Flower app"
license = "MIT"
dependencies = ["fedlab-utils"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "efficient-fl-course"

[tool.flwr.app.components]
serverapp = "{APP_MODULE}:server_app"
clientapp = "{APP_MODULE}:client_app"

[tool.flwr.app.config]
{defaults}
""", encoding="utf-8")
    (folder / f"{APP_MODULE}.py").write_text(
        '"""The course\'s Flower app: both components live in fedlab_utils.deploy.apps."""\n'
        "from fedlab_utils.deploy.apps import make_client_app, make_server_app\n\n"
        "client_app = make_client_app()\nserver_app = make_server_app()\n", encoding="utf-8")
    return folder


def superlink_command(pki: PKI | None, host: str, port: int) -> list[str]:
    """``flower-superlink`` with TLS (the PKI's CA, certificate and key) and SuperNode
    authentication, or ``--insecure`` when ``pki`` is None.  Fleet, Control and ServerAppIo APIs
    all listen on ``host:port`` in Flower 1.42."""
    if pki is None:
        security = ["--insecure"]
    else:
        security = ["--ssl-ca-certfile", str(pki.ca_cert), "--ssl-certfile", str(pki.server_cert),
                    "--ssl-keyfile", str(pki.server_key), "--enable-supernode-auth"]
    return ["flower-superlink", *security, "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]


def supernode_command(superlink: str, index: int, supernodes: int, *, root_certificates: str | Path | None,
                      private_key: str | Path | None, port: int, max_retries: int | None = None) -> list[str]:
    """``flower-supernode`` for client ``index`` of ``supernodes``: TLS trusting ``root_certificates``
    and authenticated by ``private_key``, or ``--insecure`` when ``root_certificates`` is None.
    ``port`` is the SuperNode's own local API (on 127.0.0.1); ``max_retries`` as Flower's flag."""
    security = ["--insecure"] if root_certificates is None else ["--root-certificates", str(root_certificates)]
    if private_key is not None:
        security += ["--auth-supernode-private-key", str(private_key)]
    retries = [] if max_retries is None else ["--max-retries", str(max_retries)]
    return ["flower-supernode", *security, "--superlink", superlink, *retries,
            "--node-config", f"{NODE_PARTITION_KEY}={index} {NODE_COUNT_KEY}={supernodes}",
            "--host", "127.0.0.1", "--port", str(port)]


def connection_toml(address: str, root_certificates: str | Path | None, name: str = CONNECTION) -> str:
    """The ``[superlink.NAME]`` entry of ``$FLWR_HOME/config.toml`` that ``flwr run`` and
    ``flwr supernode`` read: the SuperLink's address and the CA to trust (or ``insecure``)."""
    trust = "insecure = true" if root_certificates is None else f"root-certificates = {json.dumps(str(root_certificates))}"
    return f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n{trust}\n'


@dataclass(frozen=True)
class Step:
    """One command of a deployment: where it runs, why, its argv, and whether it keeps running."""

    where: str
    why: str
    argv: tuple[str, ...]
    background: bool = False
    #: ``where`` and ``why`` as catalog messages with their values, for the reader's language
    messages: tuple[str, str] = ("", "")
    values: tuple[tuple[str, object], ...] = ()

    def shell(self) -> str:
        return shlex.join(self.argv) + (" &" if self.background else "")

    def comment(self) -> str:
        """``# where: why`` in the reader's language (English: exactly ``where`` and ``why``)."""
        if not all(self.messages):
            return f"# {self.where}: {self.why}"
        values = dict(self.values)
        where, why = (gettext(m).format(**values) for m in self.messages)
        return gettext("# {where}: {why}").format(where=where, why=why)


def _step(where: str, why: str, argv: tuple[str, ...], background: bool = False, **values: object) -> Step:
    """A :class:`Step` whose ``where``/``why`` are catalog messages filled with ``values``."""
    return Step(where.format(**values), why.format(**values), argv, background, (where, why), tuple(values.items()))


def machine_steps(supernodes: int, server: str, port: int, pki_dir: str | Path, *, sans: tuple[str, ...] = (),
                  bind: str = "0.0.0.0", node_ports: list[int] | None = None, app: str | Path = "fedlab-app",
                  rounds: int = 20) -> list[Step]:
    """The whole secure deployment as commands: make the PKI, start the SuperLink, register every
    device's public key, start each SuperNode, write the app and submit it.  :func:`local_federation`
    runs these very commands with ``server='127.0.0.1'``; :func:`real_machine_commands` renders them."""
    pki_dir = Path(pki_dir)
    ca = pki_dir / "ca.crt"
    address = f"{server}:{port}" if ":" not in server else f"[{server}]:{port}"
    node_ports = node_ports or [REAL_PORT + 1] * supernodes
    pki = PKI(pki_dir, ca, pki_dir / "server.pem", pki_dir / "server.key",
              tuple(pki_dir / f"supernode-{i}" for i in range(supernodes)), ())
    san_args = [a for s in sans for a in ("--san", s)]
    steps = [_step(N_("server"), N_("make the federation's CA, server certificate and one key pair per device"),
                   ("python", "-m", "fedlab_utils", "deploy", "pki", "--out", str(pki_dir),
                    "--supernodes", str(supernodes), *san_args)),
             _step(N_("server"), N_("start the SuperLink (open TCP port {port} to the devices and your laptop)"),
                   tuple(superlink_command(pki, bind, port)), background=True, port=port)]
    for i, pub in enumerate(pki.supernode_public_keys):
        steps.append(_step(N_("laptop"), N_("register device {i}'s public key before it starts"),
                           ("flwr", "supernode", "register", str(pub), CONNECTION, "--format", "json"), i=i))
    for i, key in enumerate(pki.supernode_keys):
        steps.append(_step(N_("device {i}"), N_("start SuperNode {i} (needs ca.crt and its own supernode-{i} key)"),
                           tuple(supernode_command(address, i, supernodes, root_certificates=ca, private_key=key,
                                                   port=node_ports[i])), background=True, i=i))
    steps += [_step(N_("laptop"), N_("write the course's Flower app folder"),
                    ("python", "-m", "fedlab_utils", "deploy", "app", "--out", str(app), "--supernodes", str(supernodes),
                     "-p", "rounds", str(rounds))),
              _step(N_("laptop"), N_("submit the run and stream its log"), ("flwr", "run", str(app), CONNECTION, "--stream"))]
    return steps


def real_machine_commands(supernodes: int = 2, server: str = "SERVER_IP", port: int = REAL_PORT,
                          pki_dir: str = "fedlab-pki", rounds: int = 20, node_ports: list[int] | None = None) -> str:
    """The commands of a secure deployment on a server and ``supernodes`` devices: exactly what
    :func:`local_federation` runs on 127.0.0.1 (:func:`machine_steps`), with the addresses changed.
    Run from the course folder's environment on each machine (``pip install -e .``).  The
    ServerApp writes ``progress.jsonl`` and ``history.json`` to ``fedlab-results/`` in the folder
    where the SuperLink was started.  ``node_ports``: each SuperNode's local port (distinct only
    when several share one machine)."""
    steps = machine_steps(supernodes, server, port, pki_dir, sans=(server,), rounds=rounds, node_ports=node_ports)
    address = f"{server}:{port}"
    lines = [*gettext("# Server {server}: open TCP port {port} (inbound) to the devices and your laptop; the devices\n"
                      "# open no port (they dial out). Keep ca.key and server.key on the server; give device i only\n"
                      "# {pki_dir}/ca.crt and its own {pki_dir}/supernode-i (private, mode 0600).").format(
                 server=server, port=port, pki_dir=pki_dir).splitlines(),
             f"# TLS: {TLS_DOCS}", gettext("# SuperNode authentication: {url}").format(url=AUTH_DOCS), ""]
    ca = Path(pki_dir) / "ca.crt"
    toml = connection_toml(address, ca if ca.is_absolute() else f"$PWD/{ca}")  # flwr wants an absolute path
    written = False
    for step in steps:
        if step.where == "laptop" and not written:
            lines += [gettext("# laptop: wait until the SuperLink answers (bash)"),
                      f"until (exec 3<>/dev/tcp/{server}/{port}) 2>/dev/null; do sleep 0.5; done",
                      gettext("# laptop: tell flwr where the SuperLink is and which CA to trust"),
                      'mkdir -p "${FLWR_HOME:-$HOME/.flwr}"',
                      f'cat > "${{FLWR_HOME:-$HOME/.flwr}}/config.toml" <<EOF\n{toml}EOF']
            written = True
        lines += [step.comment(), step.shell()]
    lines.append(gettext("# Flower deployment guide: {url}").format(url=DEPLOY_DOCS))
    return "\n".join(lines)
