"""`trimodal migrate DATASET`: rewrite a format-1 dataset as format 2 (see dataset/migrate.py)."""

from __future__ import annotations

import json

import click


@click.command("migrate")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def migrate_cmd(dataset: str, as_json: bool):
    """Rewrite DATASET (local or s3://) from manifest format 1 to format 2 in place: adds a
    length index per shard and moves the shard and input lists into Arrow tables. Shards are
    not rewritten. Exit code 3 if a shard does not match the old manifest."""
    from trimodal.dataset.migrate import migrate

    def report(done: int, total: int) -> None:
        if not as_json and (done == total or done % 100 == 0):
            click.echo(f"indexed {done}/{total} shards", err=True)

    result = migrate(dataset, progress=report)
    if as_json:
        click.echo(json.dumps(result))
    elif result["shards"]:
        click.echo(f"migrated {dataset}: format {result['from']} -> {result['to']}, {result['shards']} shards indexed")
    else:
        click.echo(f"{dataset} is already format {result['to']}; nothing to do")
