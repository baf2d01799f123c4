"""Deployment on Flower: the ServerApp and ClientApp (:mod:`.apps`), the process launcher
(:mod:`.launcher`), the real-machine commands (:mod:`.commands`), the throwaway PKI (:mod:`.pki`)
and the ``deploy`` command line (:mod:`.cli`).  Needs the ``[deploy]`` extra (flwr, cryptography,
psutil).

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "CODEC_SPECS": "fedlab_utils.deploy.apps",
    "DeploymentConfig": "fedlab_utils.deploy.apps",
    "DeploymentResult": "fedlab_utils.deploy.apps",
    "FlowerRounds": "fedlab_utils.deploy.apps",
    "HISTORY_FILE": "fedlab_utils.deploy.apps",
    "NODE_COUNT_KEY": "fedlab_utils.deploy.apps",
    "NODE_PARTITION_KEY": "fedlab_utils.deploy.apps",
    "PART_STATE_KEY": "fedlab_utils.deploy.apps",
    "PAYLOAD_DIR": "fedlab_utils.deploy.apps",
    "PROGRESS_FILE": "fedlab_utils.deploy.apps",
    "ProgressLines": "fedlab_utils.deploy.apps",
    "ROUNDS_FILE": "fedlab_utils.deploy.apps",
    "build_task": "fedlab_utils.deploy.apps",
    "make_client_app": "fedlab_utils.deploy.apps",
    "make_codec": "fedlab_utils.deploy.apps",
    "make_server_app": "fedlab_utils.deploy.apps",
    "message_bytes": "fedlab_utils.deploy.apps",
    "send_and_receive": "fedlab_utils.deploy.apps",
    "simulate": "fedlab_utils.deploy.apps",
    "app_main": "fedlab_utils.deploy.cli",
    "parse_parameters": "fedlab_utils.deploy.cli",
    "pki_main": "fedlab_utils.deploy.cli",
    "CONNECTION": "fedlab_utils.deploy.commands",
    "REAL_PORT": "fedlab_utils.deploy.commands",
    "Step": "fedlab_utils.deploy.commands",
    "app_dir": "fedlab_utils.deploy.commands",
    "connection_toml": "fedlab_utils.deploy.commands",
    "machine_steps": "fedlab_utils.deploy.commands",
    "real_machine_commands": "fedlab_utils.deploy.commands",
    "superlink_command": "fedlab_utils.deploy.commands",
    "supernode_command": "fedlab_utils.deploy.commands",
    "toml_value": "fedlab_utils.deploy.commands",
    "DeploymentError": "fedlab_utils.deploy.launcher",
    "FLOWER_PROCESS_NAMES": "fedlab_utils.deploy.launcher",
    "INSECURE_WARNING": "fedlab_utils.deploy.launcher",
    "LocalFederation": "fedlab_utils.deploy.launcher",
    "deploy": "fedlab_utils.deploy.launcher",
    "flower_command": "fedlab_utils.deploy.launcher",
    "flower_processes": "fedlab_utils.deploy.launcher",
    "local_federation": "fedlab_utils.deploy.launcher",
    "local_simulation": "fedlab_utils.deploy.launcher",
    "print_round": "fedlab_utils.deploy.launcher",
    "submit": "fedlab_utils.deploy.launcher",
    "submit_many": "fedlab_utils.deploy.launcher",
    "DEFAULT_SANS": "fedlab_utils.deploy.pki",
    "PKI": "fedlab_utils.deploy.pki",
    "PRIVATE_MODE": "fedlab_utils.deploy.pki",
    "certificate_sans": "fedlab_utils.deploy.pki",
    "certificate_summary": "fedlab_utils.deploy.pki",
    "make_pki": "fedlab_utils.deploy.pki",
    "public_key_fingerprint": "fedlab_utils.deploy.pki",
}
__all__ = ["CODEC_SPECS", "CONNECTION", "DEFAULT_SANS", "DeploymentConfig", "DeploymentError",
           "DeploymentResult", "FLOWER_PROCESS_NAMES", "FlowerRounds", "HISTORY_FILE",
           "INSECURE_WARNING", "LocalFederation", "NODE_COUNT_KEY", "NODE_PARTITION_KEY",
           "PART_STATE_KEY", "PAYLOAD_DIR", "PKI", "PRIVATE_MODE", "PROGRESS_FILE", "ProgressLines",
           "REAL_PORT", "ROUNDS_FILE", "Step", "app_dir", "app_main", "build_task",
           "certificate_sans", "certificate_summary", "connection_toml", "deploy", "flower_command",
           "flower_processes", "local_federation", "local_simulation", "machine_steps",
           "make_client_app", "make_codec", "make_pki", "make_server_app", "message_bytes",
           "parse_parameters", "pki_main", "print_round", "public_key_fingerprint",
           "real_machine_commands", "send_and_receive", "simulate", "submit", "submit_many",
           "superlink_command", "supernode_command", "toml_value"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
