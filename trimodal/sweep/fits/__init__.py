"""Laws fitted to a sweep's results table: name -> fit function (`LAWS`), and `fit`, which runs one.

Every fit takes the table and (target, rows, split, n_bootstrap, seed, level) plus its own
options and returns a `FitResult` (fits/common.py). Only numpy, scipy and pandas are imported:
`trimodal sweep fit` must not wait for torch or Ray.
"""

from __future__ import annotations

from trimodal.errors import ConfigError
from trimodal.sweep.fits.batch import fit_batch
from trimodal.sweep.fits.chinchilla import fit_chinchilla
from trimodal.sweep.fits.common import FitResult, one_blas_thread
from trimodal.sweep.fits.isoflop import fit_isoflop
from trimodal.sweep.fits.mixing import fit_mixing

LAWS = {
    "chinchilla": fit_chinchilla,
    "isoflop": fit_isoflop,
    "mixing": fit_mixing,
    "batch": fit_batch,
}

# a law's keyword -> the command-line option, for messages
OPTION_NAMES = {"n_col": "--n", "weights": "--weights", "starts": "--starts", "split": "--split", "rows": "--rows"}


def fit(law: str, df, **options) -> FitResult:
    """Fit `law` to the table `df`; options the law does not take are refused by name."""
    if law not in LAWS:
        raise ConfigError(f"--law: {law!r} is not one of {sorted(LAWS)}")
    fn = LAWS[law]
    unknown = set(options) - set(fn.__code__.co_varnames[: fn.__code__.co_argcount])
    if unknown:
        names = [OPTION_NAMES.get(k, k) for k in sorted(unknown)]
        raise ConfigError(f"--law {law}: does not take {', '.join(names)}")
    with one_blas_thread():
        return fn(df, **options)
