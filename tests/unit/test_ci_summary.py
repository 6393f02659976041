"""CI's per-tier summary: it names the failed tests, and says so when pytest died before writing its report (a full
disk made one CI run end with a bare ParseError traceback and no word of the cause)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _summary():
    spec = importlib.util.spec_from_file_location("tier_summary", ROOT / ".ci" / "tier_summary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.unit.test_a" name="test_ok"/>
<testcase classname="tests.host.test_b" name="test_broken"><failure message="x"/></testcase>
<testcase classname="tests.host.test_b" name="test_skip"><skipped message="y"/></testcase>
</testsuite></testsuites>"""


def test_summary_counts_tiers_and_names_failures(tmp_path, capsys):
    (tmp_path / "results-hostA.xml").write_text(REPORT)
    assert _summary().main([str(tmp_path / "results-hostA.xml")]) == 0
    out = capsys.readouterr().out
    assert "== hostA" in out
    assert "unit         passed    1  failed   0" in out
    assert "host         passed    0  failed   1  skipped   1" in out
    assert "FAILED tests.host.test_b::test_broken" in out


def test_summary_says_when_a_report_is_empty_and_goes_on(tmp_path, capsys):
    (tmp_path / "results-a.xml").write_text("")
    (tmp_path / "results-b.xml").write_text(REPORT)
    assert _summary().main([str(tmp_path / "results-a.xml"), str(tmp_path / "results-b.xml")]) == 0
    out = capsys.readouterr().out
    assert "pytest did not finish writing results-a.xml" in out and "free disk now" in out
    assert "== b" in out and "FAILED tests.host.test_b::test_broken" in out
