"""The offline planner on new phrasings of each kind of request issue 19 lists (grains, comparisons, top-N,
anti-joins, derived measures, averages of a field named in other words, joins from sample values, a common
word that is no table, "not found", writes without the usual verbs), over the real demo estate.

The cases live in ``bench/agent_eval/requests_dev.yaml`` (written by the planner's developer, never from the
held-out half) and are judged exactly as ``bench/agent_eval/run.py`` judges the evaluation sets: a plan's
dry-run answer against reference SQL over the demo spec's own warehouse for the same partition."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CASES = yaml.safe_load((ROOT / "bench" / "agent_eval" / "requests_dev.yaml").read_text())["cases"]


def _runner() -> Any:
    spec = importlib.util.spec_from_file_location("agent_eval_run", ROOT / "bench" / "agent_eval" / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from hub.agent.catalog import build_catalog
    from hub.demo.estate import running
    from hub.spec import load

    run = _runner()
    tmp = tmp_path_factory.mktemp("paraphrases")
    from tests.conftest import state_env

    own = {"DAGSTER_HOME": str(tmp), **state_env(tmp)}  # the checkout's spec: not the checkout's .hub/, reports/
    old = {name: os.environ.get(name) for name in own}
    os.environ.update(own)
    try:
        with running(say=lambda _: None) as live:
            demo = load(ROOT / "pipelines" / "demo.yaml")
            parts = sorted({str(c.get("partition", run.DEFAULT_PARTITION)) for c in CASES})
            yield {"run": run, "live": live, "demo": demo, "catalog": build_catalog([demo]), "tmp": tmp,
                   "refs": {p: run.reference(p, tmp) for p in parts}}
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _params() -> list[Any]:
    """One param per case; a case with ``known_failure`` is expected to fail (strictly: a fix must be noticed)."""
    return [pytest.param(c, id=f"{c['category']}-{c['request'][:40]}", marks=[pytest.mark.xfail(
        reason=c["known_failure"], strict=True)] if c.get("known_failure") else []) for c in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case", _params())
def test_paraphrase_is_understood(case: dict[str, Any], estate: dict[str, Any]) -> None:
    from hub.agent.planner import plan

    run = estate["run"]
    part = str(case.get("partition", run.DEFAULT_PARTITION))
    db = estate["tmp"] / f"{abs(hash(case['request']))}.duckdb"
    before = run._sent(estate["live"])
    res = plan(case["request"], [estate["demo"]], "offline", catalog=estate["catalog"], partition=part, warehouse=db)
    problem = run.judge(case, res, db, estate["refs"][part], estate["catalog"], run._sent(estate["live"]) - before)
    assert problem is None, f"{problem}\nnotes: {res.notes}\nspec:\n{res.spec_text}"
    if res.ok and not res.flow:
        assert res.notes, "a plan states the assumptions it made"
