"""How trimodal writes a size for people: binary units (B, KiB, MiB, GiB, TiB), one decimal.

One spelling in every command's output (`trimodal inspect`, the tokenize job's summary), so two
reports of the same dataset show the same figure; binary units because the sizes are file and
memory sizes, counted in powers of two.
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: float) -> str:
    """`n` bytes as e.g. ``512 B``, ``1.5 KiB``, ``3.2 GiB`` (TiB is the largest unit)."""
    for unit in _UNITS:
        if n < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
