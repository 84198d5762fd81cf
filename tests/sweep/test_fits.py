"""The fitted laws on tables drawn from planted laws: the bootstrap intervals cover the planted
parameters in most of R draws (a coverage count), data that cannot determine a law is refused
or warned about, every fit reports its leave-largest-out error, and `trimodal sweep fit` keeps
its JSON schema and exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize

from tests.sweep import synth
from trimodal.cli import main
from trimodal.errors import ConfigError
from trimodal.jobs.sweep_fit import LAW_NAMES, fit_command
from trimodal.sweep.fits import LAWS, fit

R, NB = 10, 10  # draws per coverage test, bootstrap resamples per draw: ~20 s for all of them
MIN_COVERED = 7  # of R: 95% intervals from 10 resamples are rough; a biased fit covers far less


def _count(results, key, planted, where="params"):
    return sum(getattr(r, where)[key].covers(planted) for r in results)


def test_chinchilla_intervals_cover_the_planted_law():
    results = [fit("chinchilla", synth.isoflop_table(seed=s), n_bootstrap=NB, seed=s) for s in range(R)]
    cover = {k: _count(results, k, synth.CHIN[k]) for k in ("E", "alpha", "beta")}
    assert all(c >= MIN_COVERED for c in cover.values()), cover
    r = results[0]
    # only final rows: the intermediate checkpoint of each trial is left out
    assert r.n_points == r.n_trials == 35
    # compute-optimal exponents: planted β/(α+β) with the table's C = 6ND relation
    a = synth.CHIN["beta"] / (synth.CHIN["alpha"] + synth.CHIN["beta"])
    assert abs(r.derived["a"].value - a) < 0.03 and abs(r.derived["a"].value + r.derived["b"].value - 1) < 1e-9
    assert r.info["flops_per_token"]["source"] == "table" and abs(r.info["flops_per_token"]["m"] - 6) < 1e-6
    assert [row["C"] for row in r.table] == pytest.approx(synth.BUDGETS)


def test_isoflop_optimum_exponents_cover_the_planted_ones():
    a = synth.CHIN["beta"] / (synth.CHIN["alpha"] + synth.CHIN["beta"])
    results = [fit("isoflop", synth.isoflop_table(seed=s), n_bootstrap=NB, seed=s) for s in range(R)]
    cover = {"a": _count(results, "a", a), "b": _count(results, "b", 1 - a)}
    assert all(c >= MIN_COVERED for c in cover.values()), cover
    assert len(results[0].table) == len(synth.BUDGETS) and all(row["inside"] for row in results[0].table)


def _planted_mixing():
    """The planted laws in the fit's parameterization (last share column, `text`, is the reference)
    and the planted optimum of the equally weighted sum."""
    ref = synth.SOURCES.index("text")
    planted = {}
    for mod, (c, k, t) in synth.MIX.items():
        planted[f"{mod}.c"] = c
        for j, src in enumerate(synth.SOURCES):
            if src != "text":
                planted[f"{mod}.t[{src}]"] = t[j] - t[ref]
    f = lambda z: sum(synth.mixing_loss(m, np.exp(z) / np.exp(z).sum()) for m in synth.MIX)
    z = min((minimize(f, np.random.default_rng(i).normal(size=3)) for i in range(5)), key=lambda o: o.fun).x
    return planted, dict(zip(synth.SOURCES, np.exp(z) / np.exp(z).sum()))


def test_mixing_law_coefficients_and_optimum_cover_the_planted_ones():
    planted, opt = _planted_mixing()
    results = [fit("mixing", synth.mixing_table(seed=s), n_bootstrap=16, seed=s) for s in range(R)]
    cover = {k: _count(results, k, v) for k, v in planted.items()}
    assert all(c >= MIN_COVERED for c in cover.values()), cover
    for src, v in opt.items():
        # the optimum sits on an edge (audio_text = 0), where a percentile interval is degenerate:
        # within 0.02 of it counts
        got = [r.derived[f"opt.share.{src}"] for r in results]
        assert sum(e.lo - 0.02 <= v <= e.hi + 0.02 for e in got) >= MIN_COVERED, (src, v, got)
    assert results[0].info["reference"] == "share.text"


def test_mixing_weights_move_the_optimum():
    df = synth.mixing_table()
    equal = fit("mixing", df, n_bootstrap=0).derived
    text_only = fit("mixing", df, weights="text=1", n_bootstrap=0)
    assert text_only.info["weights"] == {"text": 1.0, "image": 0.0, "audio": 0.0}
    # text loss falls with the text share (t = -2.5 planted): weighting only text pushes it up
    assert text_only.derived["opt.share.text"].value > equal["opt.share.text"].value + 0.2
    with pytest.raises(ConfigError, match="--law chinchilla: does not take --weights"):
        fit("chinchilla", synth.isoflop_table(), weights="text=1")


def test_batch_recovers_the_planted_power_laws():
    r = fit("batch", synth.batch_table(seed=0), n_bootstrap=NB)
    assert all(row["method"] == "quadratic" for row in r.table)
    assert r.params["b_B"].value == pytest.approx(0.3271, abs=0.02)
    assert r.params["b_lr"].value == pytest.approx(-0.125, abs=0.02)
    assert r.leave_out["lr_opt_rel_error"] < 0.1 and r.leave_out["B_opt_rel_error"] < 0.2


def test_every_law_reports_leave_largest_out():
    tables = {
        "chinchilla": synth.isoflop_table(),
        "isoflop": synth.isoflop_table(),
        "mixing": synth.mixing_table(),
        "batch": synth.batch_table(),
    }
    for law, df in tables.items():
        lo = fit(law, df, n_bootstrap=0).leave_out
        assert "skipped" not in lo, (law, lo)
        errors = [v for k, v in lo.items() if "error" in k and isinstance(v, float)]
        assert errors and all(0 <= e < 0.2 for e in errors), (law, lo)
    lo = fit("chinchilla", synth.isoflop_table(), n_bootstrap=0).leave_out
    assert lo["held_out"].startswith("largest budget C=2.56e+18") and lo["n"] == 7


def test_budget_rows_take_every_budget_point_of_a_trial():
    df = synth.isoflop_table()
    mid = ~df["final"]
    # the intermediate checkpoints become budget points of their own (a WSD branch each)
    df.loc[mid, "budget_flops"] = df.loc[mid, "flops"]
    final = fit("chinchilla", df, n_bootstrap=0)
    budget = fit("chinchilla", df, rows="budget", n_bootstrap=2)
    assert (final.n_points, final.n_trials) == (35, 35)
    assert (budget.n_points, budget.n_trials) == (70, 35)


def test_refuses_data_that_cannot_determine_the_law():
    iso = synth.isoflop_table()
    two_sizes = iso[iso["params_non_embedding"].isin(sorted(iso["params_non_embedding"].unique())[:2])]
    with pytest.raises(ConfigError, match="distinct N"):
        fit("chinchilla", two_sizes, n_bootstrap=0)
    # two sizes per budget: no parabola anywhere
    rank = iso.groupby("budget_flops")["params_non_embedding"].rank(method="dense")
    thin = iso[rank <= 2]
    with pytest.raises(ConfigError, match="at least 2"):
        fit("isoflop", thin, n_bootstrap=0)
    with pytest.raises(ConfigError, match="budget_flops"):
        fit("isoflop", iso.assign(budget_flops=np.nan), n_bootstrap=0)
    with pytest.raises(ConfigError, match=r"3\(m\+1\) = 12"):
        fit("mixing", synth.mixing_table(n=11), n_bootstrap=0)
    with pytest.raises(ConfigError, match="mix source"):
        fit("mixing", iso, n_bootstrap=0)
    with pytest.raises(ConfigError, match="more than one batch size or learning rate"):
        fit("batch", iso, n_bootstrap=0)
    with pytest.raises(ConfigError, match="--target"):
        fit("chinchilla", iso, target="video", n_bootstrap=0)
    with pytest.raises(ConfigError, match="--weights"):
        fit("mixing", synth.mixing_table(), weights="video=1", n_bootstrap=0)


def test_warns_on_weak_data():
    iso = synth.isoflop_table()
    small = iso["budget_flops"] == synth.BUDGETS[0]
    keep = ~small | iso["params_non_embedding"].isin(sorted(iso.loc[small, "params_non_embedding"].unique())[:2])
    r = fit("isoflop", iso[keep], n_bootstrap=0)
    assert any("budget dropped" in w for w in r.warnings) and len(r.table) == len(synth.BUDGETS) - 1
    # three sizes centred on the optimum: nothing to warn about
    r = fit("isoflop", synth.isoflop_table(sizes_per_budget=3, span=1.0, noise=0.0), n_bootstrap=0)
    assert not r.warnings
    # only the three smallest sizes per budget, all below the optimum: the vertex is extrapolated
    rank = iso.groupby("budget_flops")["params_non_embedding"].rank(method="dense")
    r = fit("isoflop", iso[rank <= 3], n_bootstrap=0)
    assert sum("extrapolated" in w for w in r.warnings) >= 1


def test_chinchilla_warns_when_loss_does_not_depend_on_n():
    df = synth.isoflop_table()
    noise = np.exp(0.005 * np.random.default_rng(0).standard_normal(len(df)))
    df["nelbo"] = (synth.CHIN["E"] + synth.CHIN["B"] / df["tokens"] ** synth.CHIN["beta"]) * noise
    r = fit("chinchilla", df, n_bootstrap=0)
    assert any("do not determine alpha" in w for w in r.warnings), r.warnings
    assert not fit("chinchilla", synth.isoflop_table(), n_bootstrap=0).warnings


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "fit", *argv])  # as a user types it: the `sweep` group's `fit`
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_json_schema_and_exit_codes(tmp_path, capsys):
    assert sorted(LAWS) == list(LAW_NAMES)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    synth.isoflop_table().to_parquet(sweep / "results.parquet")
    code, out, _ = _run([str(sweep), "--law", "chinchilla", "--bootstrap", "4", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert set(d) == {
        "law",
        "target",
        "rows",
        "split",
        "n_points",
        "n_trials",
        "converged",
        "bootstrap",
        "level",
        "params",
        "derived",
        "table",
        "leave_out",
        "warnings",
        "info",
    }
    assert set(d["params"]) == {"E", "A", "B", "alpha", "beta"} and set(d["params"]["alpha"]) == {"value", "lo", "hi"}
    assert d["params"]["alpha"]["lo"] <= d["params"]["alpha"]["value"] <= d["params"]["alpha"]["hi"]
    assert {"C", "N_opt", "D_opt", "L_opt"} <= set(d["table"][0]) and d["bootstrap"] == 4
    code, out, _ = _run(
        [str(sweep / "results.parquet"), "--law", "isoflop", "--bootstrap", "0", "--target", "text"], capsys
    )
    assert code == 0 and "isoflop law, target text" in out and "leave-largest-out" in out
    code, _, err = _run([str(sweep), "--law", "mixing", "--bootstrap", "0"], capsys)
    assert code == 2 and "mix source" in err
    code, _, err = _run([str(sweep), "--law", "chinchilla", "--target", "video"], capsys)
    assert code == 2 and "video" in err
    code, _, err = _run([str(tmp_path / "nowhere"), "--law", "batch"], capsys)
    assert code == 4 and "no results table" in err
    code, _, _ = _run([str(sweep), "--law", "nonsense"], capsys)
    assert code == 2


def test_readme_rows_list_every_option():
    # the `trimodal sweep` group registers these commands; tests/test_readme_commands.py then
    # asks the README for a row naming each option
    import pathlib
    import re

    from trimodal.jobs.sweep_fit import report_command

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, cmd in (("fit", fit_command), ("report", report_command)):
        rows = re.findall(rf"^\| `(trimodal sweep {name} [^`]+)` \|", readme, re.M)
        assert len(rows) == 1, name
        for p in cmd.params:
            for o in (o for o in getattr(p, "opts", []) if o.startswith("--")):
                assert re.search(re.escape(o) + r"(?![\w-])", rows[0]), (name, o)


def test_fits_import_neither_torch_nor_ray():
    code = "import sys, trimodal.jobs.sweep_fit, trimodal.sweep.fits, trimodal.sweep.report; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
