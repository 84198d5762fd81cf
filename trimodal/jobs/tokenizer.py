"""`trimodal tokenizer`: train a SentencePiece text tokenizer, print a tokenizer's fingerprint.

Thin: parses options and calls `trimodal.tokenizers.text.train_text_tokenizer` /
`load_tokenizer`; `--json` prints machine-readable results for scripts.
"""

from __future__ import annotations

import json

import click

from trimodal.dataset.schema import TOKENIZER_KINDS


@click.group("tokenizer")
def tokenizer():
    """Train text tokenizers; inspect tokenizer fingerprints."""


@tokenizer.command("train-text")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--vocab-size", type=int, required=True, help="Number of pieces (with byte fallback, 256 of them are byte pieces)."
)
@click.option("--out", "out_prefix", required=True, help="Output prefix: writes PREFIX.model and PREFIX.vocab.")
@click.option("--field", default="text", show_default=True, help="JSONL field holding the text.")
@click.option("--model-type", type=click.Choice(["bpe", "unigram"]), default="bpe", show_default=True)
@click.option("--byte-fallback/--no-byte-fallback", default=True, show_default=True)
@click.option(
    "--max-sentences",
    type=int,
    default=5_000_000,
    show_default=True,
    help="Documents SentencePiece samples from the corpus (held in memory).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_text(corpus, vocab_size, out_prefix, field, model_type, byte_fallback, max_sentences, seed, as_json):
    """Train a SentencePiece model on CORPUS files (.txt: one document per line; .jsonl: the --field
    of each record; either may be gzipped, .gz). The same corpus and options give a byte-identical
    model wherever it is written."""
    from trimodal.tokenizers.text import SentencePieceTokenizer, train_text_tokenizer

    path = train_text_tokenizer(
        list(corpus),
        out_prefix,
        vocab_size,
        model_type=model_type,
        byte_fallback=byte_fallback,
        field=field,
        max_sentences=max_sentences,
        seed=seed,
    )
    fp = SentencePieceTokenizer(path).fingerprint()
    if as_json:
        click.echo(json.dumps({"path": path, "fingerprint": fp}, sort_keys=True))
    else:
        click.echo(
            f"wrote {path} ({fp['codebook_size']} pieces, {fp['model_type']}, sha256 {fp['weights_sha256'][:12]})"
        )


@tokenizer.command("fingerprint")
@click.argument("kind", type=click.Choice(list(TOKENIZER_KINDS)))
@click.argument("path", type=click.Path(exists=True))
def fingerprint(kind, path):
    """Print the fingerprint (JSON) of the tokenizer KIND loaded from PATH."""
    from trimodal.tokenizers.base import load_tokenizer

    click.echo(json.dumps(load_tokenizer(kind, path).fingerprint(), indent=2, sort_keys=True))
