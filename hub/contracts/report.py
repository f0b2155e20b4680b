"""Contract test reports: JUnit XML (one test case per pipeline/system contract), a self-contained HTML page
and a Markdown summary."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from hub.contracts.diff import Change
from hub.contracts.runner import ContractResult


def _totals(results: Sequence[ContractResult]) -> dict[str, int]:
    out = {"contracts": len(results), "passed": 0, "drift": 0, "failed": 0, "error": 0, "skipped": 0,
           "breaking": 0, "non_breaking": 0}
    for r in results:
        out[r.status] += 1
        out["breaking"] += len(r.breaking)
        out["non_breaking"] += len(r.non_breaking)
    return out


def _rel(path: Path) -> str:
    """*path* relative to the working directory when it is below it (reports travel: CI keeps them)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- JUnit -----------------------------------------------------------------------------------------------

def junit(results: Sequence[ContractResult]) -> str:
    """JUnit XML: a test suite per pipeline, a test case per system contract; breaking changes are the
    failure, non-breaking ones go to system-out, a system that could not be read is an error."""
    t = _totals(results)
    root = ET.Element("testsuites", name="hub contracts", tests=str(t["contracts"]),
                      failures=str(t["failed"]), errors=str(t["error"]), skipped=str(t["skipped"]),
                      time=f"{sum(r.duration_s for r in results):.3f}")
    for pipeline in dict.fromkeys(r.pipeline for r in results):
        mine = [r for r in results if r.pipeline == pipeline]
        tp = _totals(mine)
        suite = ET.SubElement(root, "testsuite", name=f"contracts.{pipeline}", tests=str(tp["contracts"]),
                              failures=str(tp["failed"]), errors=str(tp["error"]), skipped=str(tp["skipped"]),
                              time=f"{sum(r.duration_s for r in mine):.3f}")
        for r in mine:
            case = ET.SubElement(suite, "testcase", classname=f"contracts.{pipeline}", name=r.system,
                                 file=_rel(r.file), time=f"{r.duration_s:.3f}")
            if r.error is not None:
                ET.SubElement(case, "error", message=r.error, type="ContractError").text = r.error
            elif r.skipped is not None:
                ET.SubElement(case, "skipped", message=r.skipped)
            elif r.breaking:
                failure = ET.SubElement(case, "failure", type="BreakingChange",
                                        message=f"{len(r.breaking)} breaking change(s) in {r.protocol} system "
                                                f"{r.system}")
                failure.text = "\n".join(c.message() for c in r.breaking)
            if r.non_breaking:
                ET.SubElement(case, "system-out").text = "\n".join(c.message() for c in r.non_breaking)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: Sequence[ContractResult], path: Path) -> Path:
    return _write(path, junit(results))


# --- Markdown --------------------------------------------------------------------------------------------

_ICON = {"passed": "✅ passed", "drift": "🟡 drift", "failed": "❌ failed", "error": "⛔ error", "skipped": "⏭ skipped"}


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: Sequence[ContractResult]) -> str:
    t = _totals(results)
    lines = ["# Contract tests", "",
             f"{t['contracts']} contract(s): {t['passed']} passed, {t['drift']} with non-breaking drift, "
             f"{t['failed']} failed, {t['error']} errors, {t['skipped']} skipped; {t['breaking']} breaking and "
             f"{t['non_breaking']} non-breaking change(s).", "",
             "| contract | protocol | result | breaking | non-breaking | snapshot |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for r in results:
        lines.append(f"| {r.name} | {r.protocol} | {_ICON[r.status]} | {len(r.breaking)} | {len(r.non_breaking)} "
                     f"| `{_rel(r.file)}` |")
    for r in results:
        if not (r.changes or r.error or r.skipped):
            continue
        lines += ["", f"## {r.name} ({r.protocol})", ""]
        if r.error or r.skipped:
            lines.append(f"{_ICON[r.status]}: {_md(r.error or r.skipped or '')}")
            continue
        lines += ["| severity | path | change | before | after | used by |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in sorted(r.changes, key=lambda c: not c.breaking):
            lines.append(f"| {'**breaking**' if c.breaking else 'non-breaking'} | `{_md(c.path)}` | {_md(c.what)} | "
                         f"{_md(c.before)} | {_md(c.after)} | {_md('; '.join(c.used_by) or 'not used')} |")
    return "\n".join(lines) + "\n"


def write_markdown(results: Sequence[ContractResult], path: Path) -> Path:
    return _write(path, markdown(results))


# --- HTML ------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;
padding-bottom:.3rem}.muted{color:#656d76}table{border-collapse:collapse;width:100%;margin:.6rem 0}
th,td{border:1px solid #d0d7de;padding:.35rem .55rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;padding:.05rem .25rem;
border-radius:4px}.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;font-weight:600;font-size:12px}
.passed{background:#dafbe1;color:#116329}.drift{background:#fff8c5;color:#7d4e00}.failed,.breaking{background:#ffebe9;
color:#a40e26}.error{background:#ffebe9;color:#a40e26}.skipped{background:#eaeef2;color:#424a53}
.non-breaking{background:#ddf4ff;color:#0550ae}.cards{display:flex;gap:.8rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:.6rem 1rem;min-width:8rem}.card b{font-size:1.4rem;
display:block}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _change_row(c: Change) -> str:
    sev = "breaking" if c.breaking else "non-breaking"
    return (f"<tr><td><span class='badge {sev}'>{sev}</span></td><td><code>{_e(c.path)}</code></td>"
            f"<td>{_e(c.what)}</td><td>{_e(c.before)}</td><td>{_e(c.after)}</td>"
            f"<td>{_e('; '.join(c.used_by)) if c.used_by else '<span class=muted>not used</span>'}</td></tr>")


def html_report(results: Sequence[ContractResult], *, title: str = "Contract tests") -> str:
    """A self-contained page (inline CSS, no scripts, no external resources)."""
    t = _totals(results)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cards = "".join(f"<div class='card'><b>{t[k]}</b>{label}</div>" for k, label in (
        ("contracts", "contracts"), ("passed", "passed"), ("drift", "non-breaking drift"), ("failed", "failed"),
        ("error", "errors"), ("breaking", "breaking changes"), ("non_breaking", "non-breaking changes")))
    rows = "".join(
        f"<tr><td><a href='#{_e(r.name)}'>{_e(r.name)}</a></td><td>{_e(r.protocol)}</td>"
        f"<td><span class='badge {r.status}'>{r.status}</span></td><td>{len(r.breaking)}</td>"
        f"<td>{len(r.non_breaking)}</td><td><code>{_e(_rel(r.file))}</code></td><td>{r.duration_s:.2f} s</td></tr>"
        for r in results)
    sections = []
    for r in results:
        body: str
        if r.error is not None:
            body = f"<p><span class='badge error'>error</span> {_e(r.error)}</p>"
        elif r.skipped is not None:
            body = f"<p><span class='badge skipped'>skipped</span> {_e(r.skipped)}</p>"
        elif not r.changes:
            body = "<p class='muted'>The live system matches the snapshot.</p>"
        else:
            ordered = sorted(r.changes, key=lambda c: not c.breaking)
            body = ("<table><tr><th>severity</th><th>path</th><th>change</th><th>before</th><th>after</th>"
                    "<th>used by</th></tr>" + "".join(_change_row(c) for c in ordered) + "</table>")
        sections.append(f"<h2 id='{_e(r.name)}'>{_e(r.name)} <span class='badge {r.status}'>{r.status}</span> "
                        f"<span class='muted'>{_e(r.protocol)}</span></h2>{body}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width,initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class='muted'>hub contracts test, {when}. A change is <b>breaking</b> when a "
            "source of the pipeline uses what changed; changes to anything no source uses are reported, "
            "never breaking.</p>"
            f"<div class='cards'>{cards}</div>"
            "<table><tr><th>contract</th><th>protocol</th><th>result</th><th>breaking</th><th>non-breaking</th>"
            f"<th>snapshot</th><th>time</th></tr>{rows}</table>{''.join(sections)}</body></html>\n")


def write_html(results: Sequence[ContractResult], path: Path) -> Path:
    return _write(path, html_report(results))
