"""The `trimodal` command line.

Subcommands live in `trimodal.jobs` and are imported only when invoked, so `trimodal --help`
stays fast and a text-only command never imports torch or Ray.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage or config (the key is named);
3 stored data failed verification (the shard is named); 4 an input could not be read.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from trimodal import __version__
from trimodal.errors import ConfigError, InputError, IntegrityError

# name -> "module:attribute" of a click command or group
COMMANDS = {
    "demo": ("trimodal.jobs.demo:demo", "Run the whole flow on a built-in corpus, offline, on CPU."),
    "tokenize": ("trimodal.jobs.tokenize:tokenize", "Tokenize raw corpora into a dataset on Ray."),
    "retokenize": ("trimodal.jobs.retokenize:retokenize", "Re-encode one modality of a dataset with a new tokenizer."),
    "inspect": (
        "trimodal.jobs.inspect:inspect_cmd",
        "Summarize a tokenized dataset; --render decodes samples to look at.",
    ),
    "migrate": ("trimodal.jobs.migrate:migrate_cmd", "Rewrite a format-1 dataset as format 2 (length index, tables)."),
    "tokenizer": ("trimodal.jobs.tokenizer:tokenizer", "Train text tokenizers."),
    "codec": ("trimodal.jobs.codec:codec", "Build local image/audio codecs."),
    "mix": ("trimodal.jobs.mix:mix", "Preview and check data mixes."),
    "train": ("trimodal.jobs.train:train", "Train a masked diffusion model with Ray Train."),
    "eval": ("trimodal.jobs.eval:eval_cmd", "Held-out NELBO of a checkpoint per modality and task."),
    "generate": ("trimodal.jobs.generate:generate", "Generate text, images or audio from a checkpoint."),
    "serve": ("trimodal.jobs.serve:serve", "Serve encode/decode over HTTP (Ray Serve)."),
    "encode": ("trimodal.jobs.serve:encode", "Encode a file with a running service."),
    "decode": ("trimodal.jobs.serve:decode", "Decode codes into a file with a running service."),
}

EXIT_CONFIG, EXIT_INTEGRITY, EXIT_INPUT = 2, 3, 4


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # Short help from the table, without importing every job module.
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trimodal")
def cli():
    """trimodal: tokenize, mix and train on text, image and audio for masked diffusion."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None, command: click.Command | None = None):
    """Run `command` (default: the whole CLI) with the exit codes above."""
    command = command or cli
    try:
        rv = command.main(args=argv, standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ConfigError as e:
        click.echo(f"config error: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    except IntegrityError as e:
        click.echo(f"integrity error: {e}", err=True)
        sys.exit(EXIT_INTEGRITY)
    except InputError as e:
        click.echo(f"input error: {e}", err=True)
        sys.exit(EXIT_INPUT)


if __name__ == "__main__":
    main()
