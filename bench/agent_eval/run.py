"""Evaluate the planner (hub agent plan) on natural-language requests over the demo estate.

    .venv/bin/python bench/agent_eval/run.py [--backend offline|llm|all] [--cases bench/agent_eval/requests.yaml]
                                             [-k SUBSTRING] [--json bench/results/agent_eval.json] [-v]

Starts the demo estate (hub.demo.estate.running), builds the catalog of pipelines/demo.yaml, loads a reference
warehouse with the demo spec for each partition the cases use (the same one-partition dry run the planner does),
then plans every request. A case passes when the outcome is the expected one: refused (write requests), rejected
(nothing sensible to plan), or a valid plan whose dry-run result matches the expected SQL over the reference
warehouse (same row count; every expected column equals some column of the plan's table as a multiset of
values), plus the expected schedule and partitioning. A `flow:` case (a write across systems) passes when it is
planned as an approval-gated flow whose writes match the expected steps (see judge_flow), nothing sent, or refused
when the case says so. `--category flow` runs one category. `--backend all` also runs the LLM backend when
HUB_LLM_BASE_URL is set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hub.agent.catalog import build_catalog  # noqa: E402
from hub.agent.llm import LLMConfig  # noqa: E402
from hub.agent.planner import PlanResult, dry_run, plan  # noqa: E402
from hub.demo.estate import running  # noqa: E402
from hub.spec import load  # noqa: E402

DEFAULT_PARTITION = "2024-01-02"


def _norm(value: Any) -> Any:
    if isinstance(value, decimal.Decimal | float):
        return round(float(value), 4)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _columns(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, list[Counter[Any]]]:
    rel = con.sql(sql)
    names = [c for c in rel.columns if not c.startswith("_hub_")]
    rows = rel.fetchall()
    idx = [rel.columns.index(c) for c in names]
    return len(rows), [Counter(_norm(r[i]) for r in rows) for i in idx]


def compare(plan_db: Path, table: str, ref_db: Path, sql: str) -> str | None:
    """None when the plan's table holds the expected rows, else what differs."""
    with duckdb.connect(str(ref_db), read_only=True) as ref:
        n_want, want = _columns(ref, sql)
    with duckdb.connect(str(plan_db), read_only=True) as got_con:
        n_got, got = _columns(got_con, f'select * from "{table}"')
    if n_got != n_want:
        return f"{table}: {n_got} rows, expected {n_want}"
    for i, col in enumerate(want):
        if not any(col == g for g in got):
            return f"{table}: no column equals expected column {i + 1} ({list(col.items())[:3]}...)"
    return None


#: The words of a case's described action that name no operation ("the ERP operation that ...").
_ACTION_FILLER = {"the", "a", "an", "that", "which", "for", "of", "on", "in", "to", "it", "its", "their", "them",
                  "operation", "endpoint", "action", "call", "crm", "erp", "bank", "inventory", "catalogue", "side",
                  "customer", "someone", "records", "record"}


def _kind_of(action: Any) -> str:
    """The case format's kind of a write action: soap, rest POST/PUT/PATCH/DELETE, graphql mutation, sql, ..."""
    binding = action.binding or {}
    if action.protocol == "rest":
        return f"rest {str(binding.get('method') or '').upper()}"
    if action.protocol == "graphql":
        return "graphql mutation"
    op = action.name.split(".", 1)[-1]
    if op in ("put", "publish"):  # an SFTP put, a message published: "sftp put", "amqp publish"
        return f"{action.protocol} {op}"
    return str(action.protocol)


def _same_kind(action: Any, want: str) -> bool:
    """Whether *action* is of the case's kind; "sftp" alone also names an SFTP put (the format's kinds)."""
    kind, want = _kind_of(action).lower(), want.lower()
    return kind == want or kind.split(" ")[0] == want


def _walk(steps: list[dict[str, Any]], when: bool = False) -> list[tuple[dict[str, Any], bool]]:
    out = []
    for st in steps or []:
        cond = when or bool(st.get("when"))
        if st.get("call"):
            out.append((st, cond))
        out += _walk(st.get("steps") or [], cond)
        for br in st.get("branch") or []:
            out += _walk(br.get("steps") or [], cond or bool(br.get("when")))
    return out


def judge_flow(case: dict[str, Any], res: PlanResult, catalog: Any, sent: int) -> str | None:
    """A ``flow:`` case (a request that acts across systems). Expected refused: it must be refused (nothing
    planned). Otherwise the plan must be a flow (not a read pipeline), approval-gated (``approved: false``),
    valid and dry-run with a sample request for every write step, nothing sent to the estate during the plan
    (*sent*: writes the demo CRM and ERP received), and for every expected step a planned call on the same
    system, of the same kind (soap, rest POST, ...), whose name or description shares a word (or a thesaurus
    synonym) with the described action, with a condition when the case expects one. The field mapping (``map``)
    is described in words and is not judged mechanically."""
    from hub.agent import understand as u

    if case.get("refused"):
        return None if res.refused else f"not refused ({'planned' if res.ok else res.reason})"
    if sent:
        return f"{sent} write(s) reached the estate while planning"
    if not res.ok:
        return ("refused: " if res.refused else "no valid plan: ") + res.reason
    if res.flow is None:
        return "planned as a read pipeline, not a flow"
    spec = yaml.safe_load(res.spec_text or "") or {}
    flow = (spec.get("flows") or {}).get(res.flow) or {}
    if flow.get("approved") is not False:
        return "the flow is not approval-gated (approved: false)"
    calls = _walk(flow.get("steps") or [])
    shown = {w["step"] for w in res.writes if w.get("sample")}
    missing = [st["name"] for st, _ in calls if st["name"] not in shown]
    if missing:
        return f"no sample request for step(s) {', '.join(missing)}"
    for want in case["flow"]:
        words = {u.stem(w) for w in u.split_words(str(want.get("action", ""))) if w.lower() not in _ACTION_FILLER}
        ok = False
        for st, cond in calls:
            action = catalog.get(st["call"])
            if action.system != want["system"] or not _same_kind(action, str(want["kind"])):
                continue
            have = {u.stem(w) for w in u.split_words(f"{action.name} {action.description}")}
            if not any(w in have or u.related(w) & have for w in words):
                continue
            if want.get("when") and not cond:
                continue
            ok = True
        if not ok:
            return (f"no planned write matches {want['system']} {want['kind']} ({want.get('action')})"
                    + (" with a condition" if want.get("when") else "") + "; planned: "
                    + ", ".join(f"{st['call']}{' (when)' if c else ''}" for st, c in calls))
    return None


def _sent(estate: dict[str, Any]) -> int:
    """Writes the demo CRM and ERP have received (the planner must send none)."""
    crm, erp = estate["crm"], estate["erp"]
    return (len(crm.data.activities) + len(crm.data.tasks)
            + sum(1 for r in erp.requests if b"MarkOrderPaid" in r))


def judge(case: dict[str, Any], res: PlanResult, plan_db: Path, ref_db: Path, catalog: Any = None,
          sent: int = 0) -> str | None:
    if case.get("flow"):
        return judge_flow(case, res, catalog, sent)
    if case.get("refused"):
        return None if res.refused else f"not refused ({'planned' if res.ok else res.reason})"
    if case.get("rejected"):
        return None if (not res.ok and not res.refused and res.errors) else "not rejected"
    if not res.ok:
        return "refused: " + res.reason if res.refused else "no valid plan: " + res.reason
    spec = yaml.safe_load(res.spec_text or "") or {}
    if "schedule" in case and spec.get("schedule") != case["schedule"]:
        return f"schedule {spec.get('schedule')!r}, expected {case['schedule']!r}"
    if "partitions" in case:
        parts = spec.get("partitions")
        kind = "none" if parts in (None, "none") else next(iter(parts))
        if kind != case["partitions"]:
            return f"partitions {kind}, expected {case['partitions']}"
    table = res.result_table or ""
    if "min_rows" in case:
        rows = res.dry_run.get(table, 0)
        return None if rows >= case["min_rows"] else f"{table}: {rows} rows, expected >= {case['min_rows']}"
    return compare(plan_db, table, ref_db, case["sql"])


def reference(partition: str, tmp: Path) -> Path:
    """The demo spec loaded for one partition (no exports, no expectation suites, files left in place)."""
    ref = tmp / f"reference_{partition}.duckdb"
    data = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    data.pop("checks", None)
    problems, _, _ = dry_run(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                             ROOT / "pipelines" / "_reference.yaml", partition=partition, warehouse=ref)
    if problems:
        raise SystemExit("reference warehouse: " + "; ".join(problems))
    return ref


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="offline", choices=["offline", "llm", "all"])
    ap.add_argument("--cases", type=Path, default=Path(__file__).with_name("requests.yaml"))
    ap.add_argument("-k", dest="only", default=None, help="only requests containing this text")
    ap.add_argument("--category", default=None, help="only the cases of this category (read, flow, ...)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "agent_eval.json")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each plan's notes and SQL")
    args = ap.parse_args()
    cases = yaml.safe_load(args.cases.read_text())["cases"]
    if args.only:
        cases = [c for c in cases if args.only in c["request"]]
    if args.category:
        cases = [c for c in cases if c.get("category") == args.category]
    backends = ["offline", "llm"] if args.backend == "all" else [args.backend]
    if "llm" in backends and not os.environ.get("HUB_LLM_BASE_URL"):
        if args.backend == "llm":
            raise SystemExit("--backend llm needs HUB_LLM_BASE_URL (and HUB_LLM_MODEL)")
        backends.remove("llm")
    summary: dict[str, Any] = {"cases": len(cases), "date": dt.date.today().isoformat(), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="agent-eval-") as tmpdir, running(say=lambda _: None) as estate:
        tmp = Path(tmpdir)
        os.environ["DAGSTER_HOME"] = str(tmp)
        demo = load(ROOT / "pipelines" / "demo.yaml")
        catalog = build_catalog([demo])
        refs = {p: reference(p, tmp) for p in sorted({str(c.get("partition", DEFAULT_PARTITION)) for c in cases})}
        for backend in backends:
            model = LLMConfig.from_env() if backend == "llm" else None
            passed = 0
            rows: list[dict[str, Any]] = []
            started = time.perf_counter()
            for i, case in enumerate(cases):
                part = str(case.get("partition", DEFAULT_PARTITION))
                db = tmp / f"{backend}_{i}.duckdb"
                t0 = time.perf_counter()
                before = _sent(estate)
                try:
                    res = plan(case["request"], [demo], "llm" if backend == "llm" else "offline", catalog=catalog,
                               partition=part, warehouse=db, llm=model)
                    problem = judge(case, res, db, refs[part], catalog, _sent(estate) - before)
                except Exception as exc:  # a crash is a failed case, not a failed benchmark
                    res, problem = PlanResult(case["request"], backend), f"crashed: {type(exc).__name__}: {exc}"
                ok = problem is None
                passed += ok
                rows.append({"request": case["request"], "pass": ok, "problem": problem,
                             "seconds": round(time.perf_counter() - t0, 2), "result_table": res.result_table})
                print(f"{'PASS' if ok else 'FAIL'} [{backend}] {case['request']}" + ("" if ok else f"  -- {problem}"))
                if args.verbose:
                    for note in res.notes:
                        print(f"      note: {note}")
                    for mname, model in ((yaml.safe_load(res.spec_text or "") or {}).get("models") or {}).items():
                        print(f"      model {mname}: " + " ".join(str(model.get("sql", "")).split()))
            total = len(cases)
            elapsed = time.perf_counter() - started
            print(f"{backend}: {passed}/{total} passed ({100 * passed / max(total, 1):.0f}%) in {elapsed:.1f} s")
            summary["backends"][backend] = {"passed": passed, "total": total, "seconds": round(elapsed, 1),
                                            "model": os.environ.get("HUB_LLM_MODEL") if backend == "llm" else None,
                                            "results": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
