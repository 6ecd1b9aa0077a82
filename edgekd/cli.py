"""``edgekd`` command line. Each subcommand lives in ``edgekd/commands/<name>.py`` and exposes
``register(subparsers)``; the subcommand's handler calls the public API (no logic here)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from edgekd import __version__
from edgekd.errors import EdgekdError

# what the [train] extra adds to the device-side base install: a command that needs one of them says so
TRAIN_EXTRA_MODULES = frozenset({"torch", "torchvision", "brevitas", "torch_pruning", "onnxscript", "sklearn", "scipy",
                                 "tomli_w"})

DESCRIPTION = """\
edgekd: compress a PyTorch model (distillation, 2:4 sparsity, channel pruning, quantization)
and ship it to edge devices (ONNX Runtime, OpenVINO, TensorRT, FPGA HLS).

Start here:
  edgekd demo                                  train a tiny teacher, compress a student, build every target
  edgekd list recipes|targets|passes|backends what exists on this machine
  edgekd compress --model SRC --data SRC --recipe int8-kd --target cpu --out bundle/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekd", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import edgekd.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"edgekd.commands.{info.name}").register(sub)
    return parser


class _DeprecatedProfile(argparse.Action):
    """``--profile NAME``: the old spelling of ``--recipe`` (the compression recipe, not ``edgekd profile``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from edgekd.deprecation import deprecated

        deprecated("--profile", "--recipe (the compression recipe; `edgekd profile` measures latency)")
        setattr(namespace, self.dest, values)


def add_recipe(parser: argparse.ArgumentParser, *, default: str | None, help: str) -> None:
    """``--recipe`` (and the deprecated ``--profile``, hidden from --help)."""
    parser.add_argument("--recipe", default=default, help=help)
    parser.add_argument("--profile", dest="recipe", action=_DeprecatedProfile, help=argparse.SUPPRESS)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")


def main(argv: list[str] | None = None) -> int:
    import logging

    # torch logs "No CUDA runtime is found" on import of cpp_extension (pulled in by brevitas): noise on a CPU host
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if getattr(args, "quiet", False):
        from edgekd.progress import set_quiet

        set_quiet(True)
    _terminate_like_interrupt()
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except EdgekdError as exc:
        print(f"edgekd: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in TRAIN_EXTRA_MODULES:
            raise
        print(f"edgekd: error: `edgekd {args.command}` needs the [train] extra ({missing} is not installed): "
              "pip install 'edgekd[train]'\n  hint: on a device, `edgekd check`, `edgekd profile` and edgekd.runtime "
              "need only the base install (pip install edgekd)", file=sys.stderr)
        return 2
    except Terminated:
        print("edgekd: terminated (SIGTERM); nothing half-written was left in place", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("edgekd: interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    """``edgekd ... | head -1``: the reader closed the pipe. Everything was already written to files; stop quietly
    with the shell's SIGPIPE status (128 + 13), and point stdout at /dev/null so the exit flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing left to silence
        pass
    return 141


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI cancel, kill, a container stop): unwinds like Ctrl-C so every ``with`` cleans up."""


def _terminate_like_interrupt() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
