"""The nodeos command line: parses arguments and hands off to the part that does the work."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nodeos import __version__, config, plancli


def kubectl_main() -> int:
    """``kubectl nodeos …`` (installed as ``kubectl-nodeos``): the ``plan`` commands."""
    return main(["plan", *sys.argv[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command named by ``argv`` and returns its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except ImportError as error:
        if not any(part in str(error) for part in _DEVELOPER_MODULES):
            raise
        print(
            f"nodeos: this command needs the developer tools, which the operator image leaves "
            f"out ({error}); run it from a checkout or an installed nodeos package",
            file=sys.stderr,
        )
        return 2
    return code


# What the operator image leaves out (Dockerfile): a command that needs one says so.
_DEVELOPER_MODULES = ("nodeos.sandbox", "nodeos.simulator", "'demo'", "'codegen'")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodeos",
        description="Rolls OS upgrades across Kubernetes nodes that run an API-driven OS "
        "(Talos). 'nodeos run' is the operator; the other commands are for trying it out.",
    )
    parser.add_argument("--version", action="version", version=f"nodeos {__version__}")
    commands = parser.add_subparsers(title="commands")

    sandbox = commands.add_parser("sandbox", help="a local Kubernetes control plane on loopback")
    sandbox_commands = sandbox.add_subparsers(title="sandbox commands")
    sandbox.set_defaults(run=lambda _: _usage(sandbox))
    build = sandbox_commands.add_parser("build", help="build the Go binaries that are missing")
    build.set_defaults(run=_sandbox_build)
    image = sandbox_commands.add_parser(
        "image", help="build the operator image from ./Dockerfile with buildah (no Docker)"
    )
    image.add_argument("--tag", default=f"localhost/nodeos:{__version__}", help="image name")
    image.add_argument(
        "--stand-in-bases",
        action="store_true",
        help="build on bases made from Debian packages with mmdebstrap (no registry needed)",
    )
    image.add_argument(
        "--platform",
        action="append",
        default=[],
        help="e.g. linux/arm64; repeat for a multi-arch manifest list (default: this machine)",
    )
    image.add_argument("--context", type=Path, default=Path(), help="folder with the Dockerfile")
    image.set_defaults(run=_sandbox_image)
    for name, func, text in (
        ("up", _sandbox_up, "start a sandbox in the background and print its kubeconfig"),
        ("down", _sandbox_down, "stop the sandbox and delete its files"),
        ("status", _sandbox_status, "say whether the sandbox runs and where"),
    ):
        command = sandbox_commands.add_parser(name, help=text)
        command.add_argument("--dir", type=Path, default=None, help="sandbox working directory")
        command.set_defaults(run=func)

    operator = commands.add_parser("run", help="run the operator (leader-elected)")
    config.add_arguments(operator)
    operator.set_defaults(run=_run_operator)

    simulate = commands.add_parser(
        "simulate", help="serve simulated Talos nodes (OS API over mTLS) until stopped"
    )
    simulate.add_argument("--dir", type=Path, required=True, help="where to write talosconfig")
    simulate.add_argument("--control-planes", type=int, default=3, help="cp-1..cp-N (default 3)")
    simulate.add_argument("--workers", type=int, default=5, help="worker-1..worker-N (default 5)")
    simulate.add_argument("--version", default="v1.12.4", help="OS version the nodes start on")
    simulate.add_argument(
        "--reboot-seconds", type=float, default=3.0, help="how long a reboot takes (default 3)"
    )
    simulate.add_argument(
        "--per-node-addresses", action="store_true", help="also listen on 127.0.0.10, .11, ..."
    )
    simulate.add_argument(
        "--port",
        type=int,
        default=0,
        help="port of the OS API endpoint (default: any free port); keep it across restarts",
    )
    simulate.add_argument("--kubeconfig", type=Path, help="drive these nodes' Node objects")
    simulate.add_argument(
        "--client-cert-validity",
        type=float,
        default=86400.0,
        help="seconds the talosconfig's client certificate is valid (talosconfig-spare: 1 day)",
    )
    simulate.add_argument(
        "--kubelet-resync-seconds",
        type=float,
        default=20.0,
        help="how often the Nodes' boot ID and OS image, and running pods' readiness, are "
        "posted again where someone wrote over them, as kubelets do (default 20)",
    )
    simulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NODE=FAULTS",
        help="a node's faults, repeatable: install-fails[=EXIT_CODE] (the installer exits with "
        "that code), never-returns, boot-fallback, slow-reboot[=SECONDS], unavailable[=CALLS] "
        "(the next CALLS calls answer Unavailable), etcd-unhealthy, legacy-only, "
        "reject-config[=MESSAGE]; e.g. worker-2=install-fails=3,slow-reboot=20",
    )
    simulate.set_defaults(run=_simulate)

    plancli.add_commands(commands)

    completion = commands.add_parser(
        "completion", help="print a bash completion script: source <(nodeos completion bash)"
    )
    completion.add_argument("shell", choices=("bash",))
    completion.set_defaults(run=lambda _: _completion(parser))

    demo = commands.add_parser("demo", help="sandbox + fake fleet + workload, shown live")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    demo.set_defaults(run=_demo)
    return parser


def _completion(parser: argparse.ArgumentParser) -> int:
    """Bash completion for commands, subcommands and flags, read from the parser itself."""
    words: dict[str, list[str]] = {}

    def walk(current: argparse.ArgumentParser, path: str) -> None:
        options = [o for a in current._actions for o in a.option_strings]
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    options.append(name)
                    walk(sub, f"{path} {name}".strip())
        words[path] = options

    walk(parser, "")
    cases = "\n".join(
        f'        "{path}") opts="{" ".join(options)}" ;;' for path, options in words.items()
    )
    print(
        "_nodeos() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" path="" word\n'
        '    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do\n'
        '        case "$word" in -*) ;; *) path="${path:+$path }$word" ;; esac\n'
        "    done\n"
        '    [[ "${COMP_WORDS[0]}" == kubectl-nodeos ]] && path="plan${path:+ $path}"\n'
        '    local opts=""\n'
        '    case "$path" in\n'
        f"{cases}\n"
        "    esac\n"
        '    COMPREPLY=($(compgen -W "$opts" -f -- "$cur"))\n'
        "}\n"
        "complete -F _nodeos nodeos kubectl-nodeos"
    )
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _default_dir(explicit: Path | None) -> Path:
    from nodeos.sandbox import toolchain

    return explicit or toolchain.cache_root() / "sandbox"


def _sandbox_build(_: argparse.Namespace) -> int:
    from nodeos.sandbox import toolchain

    paths = toolchain.ensure_built()
    link_dir = toolchain.link_binaries(paths)
    print(f"binaries ready in {link_dir} (add it to PATH for kubectl and helm)")
    return 0


def _sandbox_image(args: argparse.Namespace) -> int:
    from nodeos.sandbox import image

    try:
        if args.stand_in_bases:
            image.build_on_stand_ins(args.context, args.tag, args.platform)
        else:
            image.build(args.context, args.tag, platforms=args.platform)
    except image.ImageError as error:
        print(error, file=sys.stderr)
        return 1
    print(args.tag)
    return 0


def _sandbox_up(args: argparse.Namespace) -> int:
    from nodeos.sandbox import cluster, toolchain

    workdir = _default_dir(args.dir)
    existing = cluster.load_state(workdir)
    if existing is not None:
        print(f"a sandbox already runs in {workdir}", file=sys.stderr)
        print(f"export KUBECONFIG={existing.kubeconfig}")
        return 0
    paths = toolchain.ensure_built()
    toolchain.link_binaries(paths)
    sandbox = cluster.Sandbox(workdir, paths, die_with_parent=False)
    try:
        state = sandbox.start()
    except cluster.SandboxError as error:
        print(error, file=sys.stderr)
        return 1
    # stdout holds only shell lines, so `eval "$(nodeos sandbox up)"` works
    print(f"sandbox ready in {state.ready_after_s:.1f}s at {state.server}", file=sys.stderr)
    print(f"export KUBECONFIG={state.kubeconfig}")
    print(f"export PATH={toolchain.cache_root() / 'bin'}{os.pathsep}$PATH")
    return 0


def _sandbox_down(args: argparse.Namespace) -> int:
    from nodeos.sandbox import cluster

    workdir = _default_dir(args.dir)
    stopped = cluster.stop_detached(workdir)
    cluster.remove_workdir(workdir)
    print("sandbox stopped" if stopped else f"no sandbox was running in {workdir}")
    return 0


def _sandbox_status(args: argparse.Namespace) -> int:
    from nodeos.sandbox import cluster, processes

    workdir = _default_dir(args.dir)
    state = cluster.load_state(workdir)
    if state is None:
        print(f"no sandbox in {workdir}")
        return 1
    for name, pid in state.pids.items():
        print(f"{name:<24} pid {pid:<8} {'running' if processes.pid_alive(pid) else 'STOPPED'}")
    print(f"server     {state.server}\nkubeconfig {state.kubeconfig}")
    return 0


def _run_operator(args: argparse.Namespace) -> int:
    from nodeos import operator

    try:
        settings = config.from_arguments(args)
    except config.SettingsError as error:
        for line in error.lines:
            print(f"nodeos run: {line}", file=sys.stderr)
        return 2
    return operator.main(settings)


def _simulate(args: argparse.Namespace) -> int:
    from nodeos.simulator import run

    faults: dict[str, str] = {}
    for item in args.fault:
        node, separator, spec = item.partition("=")
        if not separator:
            print(f"--fault {item!r}: expected NODE=FAULTS", file=sys.stderr)
            return 2
        faults[node] = f"{faults[node]},{spec}" if node in faults else spec
    options = run.Options(
        workdir=args.dir,
        control_planes=args.control_planes,
        workers=args.workers,
        version=args.version,
        reboot_seconds=args.reboot_seconds,
        per_node_addresses=args.per_node_addresses,
        port=args.port,
        kubeconfig=args.kubeconfig,
        faults=faults,
        client_cert_validity_s=args.client_cert_validity,
        resync_s=args.kubelet_resync_seconds,
    )
    try:
        run.node_specs(options)
    except ValueError as error:
        print(f"nodeos simulate: {error}", file=sys.stderr)
        return 2
    return run.run(options)


def _demo(args: argparse.Namespace) -> int:
    from nodeos import demo

    return demo.run(keep=args.keep)
