"""The ``deploy`` subcommand of ``python -m fedlab_utils``: run a local secure federation
(``deploy``), write a federation's PKI (``deploy pki``) or the Flower app folder (``deploy app``)."""
from __future__ import annotations

import sys
from dataclasses import fields

from fedlab_utils.deploy.apps import HISTORY_FILE, DeploymentConfig
from fedlab_utils.deploy.commands import CONNECTION, app_dir
from fedlab_utils.deploy.launcher import DeploymentError, deploy
from fedlab_utils.deploy.pki import make_pki

__all__ = ["add_parser", "main", "pki_main", "app_main", "parse_parameters"]


def parse_parameters(pairs: list[list[str]] | None) -> dict:
    """``-p NAME VALUE`` pairs -> typed :class:`DeploymentConfig` keyword arguments (the course's
    one parser, :func:`fedlab_utils.course.runner.parse_parameters`, typed by the config's fields)."""
    from fedlab_utils.course.runner import parse_parameters as parse

    kinds = {f.name: f.type for f in fields(DeploymentConfig)}
    for name, _ in pairs or []:
        if name in ("out_dir", "num_clients"):
            raise ValueError(f"parameter {name!r} is not a deployment parameter; valid: "
                             f"{sorted(set(kinds) - {'out_dir', 'num_clients'})} (the number of clients is "
                             f"--supernodes, the output folder --out)")
    return parse(pairs, kinds, valid=set(kinds) - {"out_dir", "num_clients"})


def main(supernodes: int, pairs: list[list[str]] | None, out_dir: str | None, insecure: bool = False,
         simulation: bool = False, keep_logs: bool = False) -> int:
    """The ``deploy`` subcommand: one clear line on failure, exit status 2."""
    try:
        if supernodes < 1:
            raise ValueError(f"--supernodes={supernodes} is invalid; valid: an int ≥ 1 (one SuperNode per client)")
        config = DeploymentConfig(**parse_parameters(pairs), num_clients=supernodes)
        result = deploy(config, supernodes=supernodes, out_dir=out_dir, insecure=insecure, simulation=simulation,
                        keep_logs=keep_logs)
    except (DeploymentError, ValueError) as err:
        print(f"deploy: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deploy: interrupted; every Flower process was stopped", file=sys.stderr)
        return 130
    totals = result.totals()
    where = f"; history in {result.out_dir / HISTORY_FILE}" if out_dir else ""
    print(f"done in {result.seconds:.1f} s: final accuracy {100 * result.accuracy[-1]:.2f}%, "
          f"uplink {totals['ledger_bytes_up']:,} B (ledger) / {totals['flower_bytes_up']:,} B (Flower messages){where}")
    return 0


def pki_main(out: str, supernodes: int, sans: list[str] | None) -> int:
    """The ``deploy pki`` subcommand: write a federation's PKI, list the files, one line on error."""
    try:
        pki = make_pki(out, supernodes, tuple(sans or ()))
    except (ValueError, OSError) as err:
        print(f"deploy pki: error: {err}", file=sys.stderr)
        return 2
    print(f"PKI in {pki.folder} (SANs: {', '.join(pki.sans)})")
    print(f"  server (keep there): {pki.ca_cert.name}, {pki.server_cert.name}, {pki.server_key.name} (0600), ca.key (0600)")
    for key, pub in zip(pki.supernode_keys, pki.supernode_public_keys):
        print(f"  device: {key.name} (private, 0600) -> that device only; {pub.name} -> flwr supernode register")
    return 0


def app_main(out: str, supernodes: int, pairs: list[list[str]] | None) -> int:
    """The ``deploy app`` subcommand: write the Flower app folder that ``flwr run`` submits."""
    try:
        config = DeploymentConfig(**parse_parameters(pairs), num_clients=supernodes)
        folder = app_dir(out, config)
    except (ValueError, OSError) as err:
        print(f"deploy app: error: {err}", file=sys.stderr)
        return 2
    print(f"Flower app in {folder}: flwr run {folder} {CONNECTION} --stream")
    return 0


def add_parser(sub) -> None:
    """The ``deploy`` subcommand of ``python -m fedlab_utils`` (with ``deploy pki`` and ``deploy app``)."""
    parser = sub.add_parser("deploy", help="run the course's FL task on a local Flower SuperLink + N SuperNodes",
                            description="Start a local Flower SuperLink and N SuperNodes (separate processes, TLS "
                                        "and SuperNode authentication with a throwaway PKI), run the task with "
                                        "`flwr run`, stream progress, tear everything down.")
    parser.add_argument("--supernodes", type=int, default=2, help="number of SuperNodes = clients (default: 2)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="set a DeploymentConfig field, e.g. -p rounds 5 -p uplink q8 -p server fedadam")
    parser.add_argument("--out", default=None, help="folder for the run's progress.jsonl and history.json")
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP, no SuperNode authentication (only for one trusted machine)")
    parser.add_argument("--simulation", action="store_true",
                        help="run the same apps on Flower's simulation runtime (Ray): --supernodes virtual "
                             "SuperNodes, no SuperNode processes (needs the [scale] extra)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the folder with Flower's logs after the run (removed by default)")
    parser.set_defaults(func=lambda args: main(args.supernodes, args.parameter, args.out, args.insecure,
                                               args.simulation, args.keep_logs))
    more = parser.add_subparsers(dest="deploy_command", metavar="{pki,app}")
    pki = more.add_parser("pki", help="write a federation's CA, server certificate and SuperNode keys",
                          description="Write a throwaway PKI for one federation: CA, server certificate (SANs "
                                      "localhost, 127.0.0.1, ::1 and each --san), one ECDSA P-384 OpenSSH key "
                                      "pair per SuperNode; private keys 0600.")
    pki.add_argument("--out", required=True, help="folder to write (outside the course folder)")
    pki.add_argument("--supernodes", type=int, required=True, help="number of SuperNode key pairs")
    pki.add_argument("--san", action="append", default=None,
                     help="one more name or IP the SuperNodes dial (the server's address); repeatable")
    pki.set_defaults(func=lambda args: pki_main(args.out, args.supernodes, args.san))
    app = more.add_parser("app", help="write the Flower app folder that `flwr run` submits")
    app.add_argument("--out", required=True, help="folder to write")
    app.add_argument("--supernodes", type=int, default=2, help="number of SuperNodes = clients (default: 2)")
    app.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a DeploymentConfig field, e.g. -p rounds 20")
    app.set_defaults(func=lambda args: app_main(args.out, args.supernodes, args.parameter))
