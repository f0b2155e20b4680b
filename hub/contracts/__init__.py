"""Contract tests: what the pipelines depend on in each system, recorded (``hub contracts snapshot``) and
checked against the live systems (``hub contracts test``, and Dagster asset checks).

* :mod:`hub.contracts.collect` reads a system's contract document through its protocol (WSDL operations,
  OpenAPI and observed JSON schemas, file layouts, table schemas);
* :mod:`hub.contracts.usage` records which fields the pipeline's sources and flows use (consumer-driven);
* :mod:`hub.contracts.diff` classifies every difference as breaking or not;
* what is specific to a protocol (its document, its uses, its comparison) is the protocol's
  (:meth:`hub.protocols.Protocol.collect` and ``compare``; the built-ins' in ``hub/protocols/<name>/contract.py``);
* :mod:`hub.contracts.report` writes JUnit XML, HTML and Markdown.
"""

from typing import TYPE_CHECKING

from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from hub.contracts.diff import Change
    from hub.contracts.runner import (
        ContractResult,
        compare,
        contract_file,
        contracts_dir,
        dumps,
        snapshot,
        systems_of,
        verify,
        verify_system,
    )

__all__ = ["Change", "ContractResult", "compare", "contract_file", "contracts_dir", "dumps", "snapshot",
           "systems_of", "verify", "verify_system"]

#: Loaded on first use, so ``hub.contracts.cli`` registers its commands without importing the adapters.
__getattr__ = lazy(__name__, {"Change": "hub.contracts.diff",
                              **{n: "hub.contracts.runner" for n in __all__ if n != "Change"}})
