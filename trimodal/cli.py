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
    "sweep": ("sweep", "Sweeps over the design space on Ray Tune: run, resume, status."),
    "encode": ("trimodal.jobs.serve:encode", "Encode a file with a running service."),
    "decode": ("trimodal.jobs.serve:decode", "Decode codes into a file with a running service."),
}

# `trimodal sweep` subcommands, loaded the same lazy way; a module adds one with one line here.
# `run` is the default: `trimodal sweep SWEEP.yaml` means `trimodal sweep run SWEEP.yaml`.
SWEEP_COMMANDS = {
    "run": ("trimodal.jobs.sweep:run_cmd", "Run a sweep, or continue one with --resume (the default)."),
    "status": ("trimodal.jobs.sweep:status_cmd", "The trials of a sweep and their state."),
    "fit": ("trimodal.jobs.sweep_fit:fit_command", "Fit a scaling, mixing or batch law to results.parquet."),
    "report": ("trimodal.jobs.sweep_fit:report_command", "Plots and fitted parameters of a sweep as index.html."),
}
# groups of subcommands: COMMANDS' name -> (its table, its default subcommand)
GROUPS = {"sweep": (SWEEP_COMMANDS, "run")}

EXIT_CONFIG, EXIT_INTEGRITY, EXIT_INPUT = 2, 3, 4


class LazyGroup(click.Group):
    """A group whose subcommands come from a table of "module:attribute" targets (imported only
    when invoked); a target naming one of `GROUPS` is itself such a group. With `default`, a
    first argument that is not a subcommand goes to the default subcommand."""

    def __init__(self, *args, table: dict | None = None, default: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = COMMANDS if table is None else table
        self.default = default

    def list_commands(self, ctx):
        return sorted(self.table)

    def get_command(self, ctx, name):
        if name not in self.table:
            return None
        target, short = self.table[name]
        if target in GROUPS:
            table, default = GROUPS[target]
            return LazyGroup(name=name, table=table, default=default, help=short)
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def parse_args(self, ctx, args):
        if self.default and args and args[0] not in self.table and not args[0].startswith("-"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)

    def format_commands(self, ctx, formatter):
        # Short help from the table, without importing every job module.
        rows = [(n, self.table[n][1]) for n in self.list_commands(ctx)]
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
