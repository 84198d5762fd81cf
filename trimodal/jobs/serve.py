"""`trimodal serve`, `trimodal encode`, `trimodal decode`: the tokenization service and its client.

    trimodal serve CONFIG.yaml [--host 127.0.0.1] [--port 8000] [--insecure] [--json]
    trimodal serve --dataset URI [CONFIG.yaml]      # the tokenizers the dataset's manifest names
    trimodal encode FILE --url URL [--modality M] [--out CODES.json]
    trimodal decode CODES.json --url URL --out FILE

Exit codes (the CLI's): 2 a bad config or request (the key or field is named; 400, 401, 413);
3 the tokenizers no longer match the dataset's fingerprints (`serve --dataset`); 4 the service
rejected the input as the tokenize job would quarantine it (422, the reason is printed);
1 the service could not be reached or failed (5xx).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from trimodal.cli import EXIT_CONFIG, EXIT_INPUT
from trimodal.dataset.schema import MODALITIES


class ClientFailure(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# What a client call can fail with, apart from bugs.
def _client_errors() -> tuple:
    import http.client

    from trimodal.client import ServiceHTTPError

    return (ServiceHTTPError, OSError, http.client.HTTPException)


def _fail(e) -> ClientFailure:
    """A client error → a message and the CLI exit code for it."""
    from trimodal.client import ServiceHTTPError

    if isinstance(e, ServiceHTTPError):
        code = EXIT_INPUT if e.status == 422 else EXIT_CONFIG if 400 <= e.status < 500 else 1
        retry = f" (retry after {e.retry_after:g} s)" if e.retry_after else ""
        return ClientFailure(f"{e}{retry}", code)
    return ClientFailure(f"cannot reach the service: {type(e).__name__}: {e}", 1)


@click.command("serve")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--dataset", default=None, help="Serve the tokenizers this dataset's manifest names (checked by fingerprint)."
)
@click.option("--host", default=None, help="Address to listen on (default: serve.host, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default: serve.port, 8000).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a bearer token.")
@click.option(
    "--address", default=None, help="Ray cluster to join (default: ray.address, RAY_ADDRESS, else a local Ray)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line (url, tokenizers) on stdout when ready.")
def serve(config, dataset, host, port, insecure, address, as_json):
    """Serve encode/decode over HTTP with Ray Serve until interrupted (Ctrl-C or SIGTERM).

    CONFIG holds the tokenize job's `tokenizers:` and `limits:` blocks, an optional `vocab`
    and a `serve:` block (see docs/service.md). With --dataset URI the tokenizers and limits
    come from the dataset's manifest and must match its fingerprints (exit 3 if not); CONFIG
    may still give `serve:` and `vocab`. Listening off loopback needs a token in
    $TRIMODAL_SERVE_TOKEN (serve.auth_token_env) unless --insecure."""
    from trimodal.service import app
    from trimodal.service.config import load_serve_config

    cfg = load_serve_config(config, dataset=dataset)
    info = app.start(cfg, host=host, port=port, insecure=insecure, address=address)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        sys.stdout.flush()
    else:
        auth = f"bearer token from ${cfg.serve.auth_token_env}" if info["auth"] else "no token"
        click.echo(
            f"serving {', '.join(info['tokenizers'])} at {info['url']} ({auth}); "
            f"ready in {info['startup_s']} s; Ctrl-C stops",
            err=True,
        )

    stopping = []

    def _stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0


@click.command("encode")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", required=True, help="The service, e.g. http://127.0.0.1:8000.")
@click.option("--modality", type=click.Choice(MODALITIES), default=None, help="Default: from the extension.")
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Write the JSON answer here instead of stdout."
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="With --out: also print a JSON summary on stdout.")
def encode(file, url, modality, out, timeout, as_json):
    """Encode FILE (text, image or audio) with the service → JSON with codes, ids, shape and the
    tokenizer fingerprint (the input of `trimodal decode`). Token: $TRIMODAL_SERVE_TOKEN."""
    from trimodal.client import Client, modality_for_path

    modality = modality or modality_for_path(file)
    if modality is None:
        raise click.UsageError(f"cannot tell the modality of {file} from its extension; pass --modality")
    from trimodal.errors import InputError

    try:
        res = Client(url, timeout=timeout).encode_file(file, modality)
    except UnicodeDecodeError as e:
        raise InputError(f"{file}: not UTF-8 text ({e})") from None
    except _client_errors() as e:
        raise _fail(e) from None
    blob = json.dumps(res, separators=(",", ":"))
    if out:
        with open(out, "w") as f:
            f.write(blob + "\n")
        summary = {"out": out, "modality": modality, "shape": res["shape"], "fingerprint": res["fingerprint"]}
        if as_json:
            click.echo(json.dumps(summary))
        else:
            click.echo(f"{file}: {modality} codes {res['shape']} (fingerprint {res['fingerprint']}) -> {out}", err=True)
    else:
        click.echo(blob)
    return 0


@click.command("decode")
@click.argument("codes_file", metavar="CODES.json", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", required=True, help="The service, e.g. http://127.0.0.1:8000.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The file to write (.txt, .png, .wav).")
@click.option("--modality", type=click.Choice(MODALITIES), default=None, help="Default: the JSON's.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def decode(codes_file, url, out, modality, timeout, as_json):
    """Decode CODES.json (what `trimodal encode` wrote: {"modality", "codes"} or {"modality",
    "ids"}) with the service into --out: UTF-8 text, PNG or WAV."""
    from trimodal.client import Client
    from trimodal.errors import ConfigError

    try:
        with open(codes_file) as f:
            doc = json.load(f)
    except ValueError as e:
        raise ConfigError(f"{codes_file}: not JSON ({e})") from None
    if not isinstance(doc, dict) or ("codes" not in doc and "ids" not in doc):
        raise ConfigError(f"{codes_file}: expected an object with 'codes' or 'ids' (and 'modality')")
    modality = modality or doc.get("modality")
    if modality is None:
        raise ConfigError(f"{codes_file}: no 'modality'; pass --modality")
    try:
        client = Client(url, timeout=timeout)
        res = client.decode_to_file(modality, doc.get("codes"), out, ids=None if "codes" in doc else doc["ids"])
    except _client_errors() as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"{modality} -> {os.path.abspath(out)} ({res['media_type']}, {res['bytes']} bytes)", err=True)
    return 0
