"""A small client for the tokenization service (docs/service.md), standard library only.

    from trimodal.client import Client
    c = Client("http://127.0.0.1:8000")              # token: $TRIMODAL_SERVE_TOKEN if set
    enc = c.encode_file("cat.jpg")                   # {"modality", "codes", "ids", "shape", "fingerprint"}
    c.decode_to_file("image", enc["codes"], "cat_roundtrip.png")
    c.encode("text", "hello")["ids"]

Every non-200 answer raises `ServiceHTTPError` with the status, the service's reason (the
tokenize job's quarantine reason for a 422) and, on 503, the server's Retry-After. Each thread
keeps one keep-alive connection; a connection the server closed between requests is reopened
once (encode and decode are pure functions, so resending is safe). Every request has a timeout,
so a caller never waits forever on a dead server.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import urllib.parse

DEFAULT_TOKEN_ENV = "TRIMODAL_SERVE_TOKEN"
EXTENSIONS = {
    "text": (".txt", ".md", ".text"),
    "image": (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"),
}
SUFFIX = {"text": ".txt", "image": ".png", "audio": ".wav"}


class ServiceHTTPError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status, self.reason, self.message, self.retry_after = status, reason, message, retry_after


def modality_for_path(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    for m, exts in EXTENSIONS.items():
        if ext in exts:
            return m
    return None


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, token_env: str = DEFAULT_TOKEN_ENV):
        u = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if u.scheme not in ("http", "https"):
            raise ValueError(f"url: expected http:// or https://, got {url!r}")
        self.url = url
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname or "127.0.0.1", u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self.token = token if token is not None else (os.environ.get(token_env) or None)
        self.timeout = timeout
        self._local = threading.local()

    # transport --------------------------------------------------------------------------
    def _conn(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One request → the JSON answer; raises ServiceHTTPError on any status but 200."""
        blob = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {"Accept": "application/json"}
        if blob is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            conn = self._conn(fresh=attempt > 0)
            try:
                conn.request(method, self._prefix + path, body=blob, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection: reopen once.
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
            except BaseException:
                conn.close()  # a timeout or an error mid-request leaves the connection unusable
                self._local.conn = None
                raise
        if resp.status != 200:
            try:
                err = json.loads(data)["error"]
                reason, message = err.get("reason", "error"), err.get("message", "")
            except (ValueError, KeyError, TypeError):
                reason, message = "http_error", data.decode("utf-8", "replace")[:500]
            retry = resp.getheader("Retry-After")
            raise ServiceHTTPError(resp.status, reason, message, float(retry) if retry and retry.isdigit() else None)
        return json.loads(data)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # API --------------------------------------------------------------------------------
    def healthz(self) -> dict:
        return self.request("GET", "/healthz")

    def tokenizers(self) -> dict:
        return self.request("GET", "/v1/tokenizers")

    def encode(self, modality: str, data: str | bytes) -> dict:
        """Text (str) or a media file's bytes → {"modality", "codes", "ids", "shape", "fingerprint"}."""
        return self.request("POST", "/v1/encode", {"modality": modality, "data": _payload(modality, data)})

    def encode_many(self, items: list[tuple[str, str | bytes]]) -> list[dict]:
        """Several items in one request; each result is a response or {"error": {...}}."""
        body = {"items": [{"modality": m, "data": _payload(m, d)} for m, d in items]}
        return self.request("POST", "/v1/encode", body)["items"]

    def encode_file(self, path: str, modality: str | None = None) -> dict:
        modality = modality or modality_for_path(path)
        if modality is None:
            raise ValueError(f"{path}: cannot tell the modality from the extension; pass modality=")
        with open(path, "rb") as f:
            data = f.read()
        if modality == "text":
            return self.encode("text", data.decode("utf-8"))
        return self.encode(modality, data)

    def decode(self, modality: str, codes=None, ids=None) -> dict:
        """Codes (storage layout, as `encode` returns them) or unified ids → {"modality",
        "media_type", "data", "fingerprint", "bytes"}: `bytes` is the file (UTF-8 text, PNG, WAV)."""
        if (codes is None) == (ids is None):
            raise ValueError("give codes or ids")
        body = {
            "modality": modality,
            ("codes" if codes is not None else "ids"): _ints(codes if codes is not None else ids),
        }
        out = self.request("POST", "/v1/decode", body)
        out["bytes"] = out["data"].encode("utf-8") if modality == "text" else base64.b64decode(out["data"])
        return out

    def decode_to_file(self, modality: str, codes, out: str, ids=None) -> dict:
        res = self.decode(modality, codes=codes, ids=ids)
        parent = os.path.dirname(os.path.abspath(out))
        os.makedirs(parent, exist_ok=True)
        with open(out, "wb") as f:
            f.write(res["bytes"])
        return {
            "out": out,
            "media_type": res["media_type"],
            "bytes": len(res["bytes"]),
            "fingerprint": res["fingerprint"],
        }


def _payload(modality: str, data: str | bytes) -> str:
    if modality == "text":
        return data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if isinstance(data, str):
        raise TypeError(f"{modality} data must be the file's bytes")
    return base64.b64encode(bytes(data)).decode("ascii")


def _ints(values):
    if hasattr(values, "tolist"):
        return values.tolist()
    return list(values)
