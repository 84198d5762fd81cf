"""`trimodal sweep report`: index.html references only PNGs that exist beside it (relative
paths, real PNG files), shows every fitted law's parameter table, and turns a plot or law the
table cannot support into a line saying why."""

import json
from html.parser import HTMLParser

import pandas as pd
import pytest

from tests.sweep import synth
from trimodal.cli import main
from trimodal.jobs.sweep_fit import report_command
from trimodal.sweep.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _check_page(out):
    page = (out / "index.html").read_text()
    parser = _Images()
    parser.feed(page)
    for src in parser.srcs:
        assert "/" not in src and ":" not in src, src  # relative, beside index.html
        assert (out / src).read_bytes()[:8] == PNG, src
    return page, parser.srcs


def test_report_of_a_full_sweep(tmp_path, capsys):
    iso = synth.isoflop_table(schedules=("linear", "cosine"), budgets=synth.BUDGETS[:4], sizes_per_budget=5)
    mix = synth.mixing_table(n=16)
    table = pd.concat([iso, mix.assign(trial="mix/" + mix["trial"])], ignore_index=True)
    table.to_parquet(tmp_path / "results.parquet")
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--out", str(out), "--bootstrap", "3", "--json"], command=report_command)
    assert e.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    page, srcs = _check_page(out)
    assert sorted(srcs) == sorted(summary["plots"])
    assert {
        "loss_vs_compute.png",
        "isoflop.png",
        "optimal_allocation.png",
        "ternary.png",
        "schedules.png",
        "residuals.png",
    } == set(srcs)
    assert summary["skipped"] == []
    # each fitted law's parameters appear with their intervals
    for law, params in (("isoflop", ("k_N", "a")), ("mixing", ("text.c", "opt.share.text"))):
        assert "skipped" not in summary["fits"][law], summary["fits"][law]
        for p in params:
            assert f"<td>{p}</td>" in page
    assert "Leave-largest-out" in page


def test_report_skips_what_the_table_cannot_show(tmp_path):
    # one schedule, no mixtures, no budgets: no isoFLOP curves, ternary or schedule plot
    iso = synth.isoflop_table(budgets=synth.BUDGETS[:3]).assign(budget_flops=float("nan"))
    summary = write_report(iso, str(tmp_path), n_bootstrap=0)
    page, srcs = _check_page(tmp_path)
    skipped = {s["plot"]: s["why"] for s in summary["skipped"]}
    assert set(skipped) == {"isoflop.png", "ternary.png", "schedules.png"}, skipped
    assert "budget_flops" in skipped["isoflop.png"] and "1 noise schedule" in skipped["schedules.png"]
    assert "3 mix sources" in skipped["ternary.png"]
    for why in skipped.values():
        assert why.replace("'", "&#x27;") in page or why in page
    # the Chinchilla law needs no budgets: its N*(C) and residuals are drawn
    assert {"loss_vs_compute.png", "optimal_allocation.png", "residuals.png"} == set(srcs)
    assert summary["fits"]["mixing"]["skipped"] and "not fitted" in page
