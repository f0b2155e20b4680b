"""Data validation: row rules applied before a load, expectation suites checked after it.

* :mod:`hub.validation.rules` — the ``rules:`` of a source (not_null, type, min, max, regex, in, unique,
  primary-key uniqueness), evaluated with ``pyarrow.compute`` on every batch before it is written; failing
  rows go to quarantine, and ``max_bad_rows`` / ``max_bad_fraction`` decide whether the load fails.
* :mod:`hub.validation.suite` — expectation suites (``contracts/**/*.suite.yaml``): the file format, loading
  with file/line/field errors, and checking each expectation against Great Expectations.
* :mod:`hub.validation.runner` — runs a suite on exactly the rows one materialization loaded, with an
  ephemeral Great Expectations context, and writes Data Docs.
* :mod:`hub.validation.suggest` — proposes a starting suite from the data already loaded.

Great Expectations is an implementation detail of :mod:`~hub.validation.suite` and
:mod:`~hub.validation.runner` and is imported lazily (it takes seconds): pipelines without ``checks:`` never
load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from hub.validation.rules import RowRules, RuleSpec, Threshold
    from hub.validation.suite import Expectation, Suite, load_suite

__all__ = ["Expectation", "RowRules", "RuleSpec", "Suite", "Threshold", "load_suite"]

#: Loaded on first use, so ``hub.validation.cli`` registers its command without pyarrow and the spec models.
__getattr__ = lazy(__name__, {"RowRules": "hub.validation.rules", "RuleSpec": "hub.validation.rules",
                              "Threshold": "hub.validation.rules", "Expectation": "hub.validation.suite",
                              "Suite": "hub.validation.suite", "load_suite": "hub.validation.suite"})
