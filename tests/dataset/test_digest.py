import hashlib
import json

from trimodal.dataset.digest import canonical_hash, file_sha256


def test_file_sha256_reads_in_slices(tmp_path):
    data = bytes(range(256)) * 5000  # more than one slice
    p = tmp_path / "blob"
    p.write_bytes(data)
    assert file_sha256(str(p), chunk=4096) == file_sha256(str(p)) == hashlib.sha256(data).hexdigest()


def test_canonical_hash_is_order_independent_and_stable():
    a = {"kind": "dac", "levels": 2, "grid": [8, 8]}
    assert canonical_hash(a) == canonical_hash(dict(reversed(list(a.items()))))
    assert canonical_hash(a) != canonical_hash(dict(a, levels=3))
    # the form stored in manifests and markers: sorted keys, no spaces, 16 hex digits
    blob = json.dumps(a, sort_keys=True, separators=(",", ":")).encode()
    assert canonical_hash(a) == hashlib.sha256(blob).hexdigest()[:16]
