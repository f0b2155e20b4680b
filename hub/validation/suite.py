"""Expectation suites: the file format lives in :mod:`hub.spec.suite` (loading a spec checks its suites, and
the spec layer never imports validation); this module keeps the names validation code imports."""

from hub.spec.suite import (
    Expectation,
    Suite,
    SuiteError,
    check_expectation,
    check_name,
    dump_suite,
    expectation_class,
    load_suite,
    parse_suite,
)

__all__ = ["Expectation", "Suite", "SuiteError", "check_expectation", "check_name", "dump_suite",
           "expectation_class", "load_suite", "parse_suite"]
