"""The demo estate: every demo service started together, with the environment the demo spec reads.

``hub demo`` and ``hub ui`` use it; tests start the services one by one on free ports instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService

#: Preferred loopback ports (a taken port falls back to any free one).
CRM_PORT, ERP_PORT = 8801, 8802


def _start(factory: Callable[[int], Any], port: int) -> Any:
    try:
        return factory(port).start()
    except OSError:  # the preferred port is taken: any free port will do, the env var says which
        return factory(0).start()


@contextmanager
def running(say: Callable[[str], None] = print) -> Iterator[dict[str, Any]]:
    """Start the CRM (REST) and the ERP (SOAP) on loopback and export what the demo spec reads:
    ``HUB_DEMO_CRM_URL``, ``CRM_TOKEN``, ``HUB_DEMO_ERP_WSDL``, ``ERP_USER``, ``ERP_PASSWORD``."""
    os.environ.setdefault("CRM_TOKEN", DEMO_TOKEN)
    os.environ.setdefault("ERP_USER", DEMO_USER)
    os.environ.setdefault("ERP_PASSWORD", DEMO_PASSWORD)
    crm = _start(lambda p: CRMService(port=p, token=os.environ["CRM_TOKEN"]), CRM_PORT)
    try:
        erp = _start(lambda p: ERPService(port=p, username=os.environ["ERP_USER"],
                                          password=os.environ["ERP_PASSWORD"]), ERP_PORT)
    except BaseException:
        crm.stop()
        raise
    os.environ["HUB_DEMO_CRM_URL"] = crm.url
    os.environ["HUB_DEMO_ERP_WSDL"] = erp.wsdl_url
    say(f"demo CRM (REST) listening on {crm.url}")
    say(f"demo ERP (SOAP) listening on {erp.url} (WSDL {erp.wsdl_url})")
    try:
        yield {"crm": crm, "erp": erp}
    finally:
        erp.stop()
        crm.stop()
