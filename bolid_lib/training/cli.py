"""Training entry point: ``python -m bolid_lib.training {body-vae,adapter} ...``.

Each sub-command lives in ``bolid_lib/training/<name>.py`` and exposes ``add_arguments(parser)``
and ``main(args)``; they are imported only when chosen, so one trainer's dependencies never slow
down the other.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "body-vae": (".body_vae", "Train the Body-ID VAE on folders of photos, one folder per person."),
    "adapter": (".adapter", "Train the BoLID adapter on SDXL with the paper's objective (eq. 14)."),
}


def _module(name: str):
    """The sub-command's module, beside this one (also when the pack is imported as <pack>.bolid_lib)."""
    return importlib.import_module(COMMANDS[name][0], __package__ or "bolid_lib.training")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bolid_lib.training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_arguments(p)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return int(_module(args.command).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
