"""`trimodal tokenize CONFIG.yaml`: raw corpora → a tokenized dataset on Ray.

Also runnable as ``python -m trimodal.jobs.tokenize CONFIG.yaml`` so that it can be handed to
``ray job submit -- python -m trimodal.jobs.tokenize job.yaml`` on a cluster (the job then joins
that cluster through RAY_ADDRESS, which `ray job submit` sets).

Exit codes: 0 the dataset was committed (quarantined samples and unreadable inputs are listed
in the summary); 2 the config is wrong (the key is named); 4 `--strict` (or `strict: true`) and
some input could not be read: the dataset is still committed, the exit code says it is partial.
"""

from __future__ import annotations

import json

import click

from trimodal.cli import EXIT_INPUT
from trimodal.cli import main as cli_main


@click.command("tokenize")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--address", default=None, help="Ray cluster to join (default: config ray.address, RAY_ADDRESS, else a local Ray)."
)
@click.option("--out", "out", default=None, help="Override output.uri.")
@click.option("--restart", is_flag=True, help="Discard earlier progress in the output and start over.")
@click.option("--strict", is_flag=True, default=None, help="Exit 4 if any input could not be read.")
@click.option("--quiet", is_flag=True, help="No progress bar or lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def tokenize(config, address, out, restart, strict, quiet, as_json):
    """Tokenize the corpora described by CONFIG (YAML) into a dataset.

    Resumable: rerunning the same command after a crash redoes only the inputs without a
    completion marker and ends with the same dataset as an uninterrupted run."""
    from trimodal.config import from_dict, load_yaml
    from trimodal.pipeline.job import run_tokenize
    from trimodal.pipeline.job_config import JobConfig
    from trimodal.pipeline.progress import format_summary

    data = load_yaml(config)
    if out:
        data.setdefault("output", {})["uri"] = out
    cfg = from_dict(JobConfig, data, where=str(config))
    result = run_tokenize(cfg, address=address, restart=restart, quiet=quiet)
    if as_json:
        click.echo(json.dumps(result, indent=1, sort_keys=True))
    else:
        click.echo(format_summary(result))
    if (strict if strict is not None else cfg.strict) and result["failed_inputs"]:
        click.echo(f"{len(result['failed_inputs'])} input(s) could not be read (strict)", err=True)
        return EXIT_INPUT
    return 0


def main(argv=None, command: click.Command | None = None) -> None:
    """Entry point for ``python -m trimodal.jobs.tokenize`` (and retokenize) with the CLI's
    exit codes."""
    cli_main(argv, command or tokenize)


if __name__ == "__main__":
    main()
