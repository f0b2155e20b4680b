"""The demo estate: every demo service started together, with the environment the demo spec reads.

``hub demo`` and ``hub ui`` use it; tests start the services one by one on free ports instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub.demo import bank
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService
from hub.demo.inventory import InventoryDb
from hub.runtime.secrets import mask_url

#: Preferred loopback ports (a taken port falls back to any free one).
CRM_PORT, ERP_PORT, BANK_PORT = 8801, 8802, 8803


def _start(factory: Callable[[int], Any], port: int) -> Any:
    try:
        return factory(port).start()
    except OSError:  # the preferred port is taken: any free port will do, the env var says which
        return factory(0).start()


#: The credentials the demo services accept, as the demo spec reads them (an exported value wins).
DEMO_CREDENTIALS = {"CRM_TOKEN": DEMO_TOKEN, "ERP_USER": DEMO_USER, "ERP_PASSWORD": DEMO_PASSWORD,
                    "BANK_PASSWORD": bank.DEMO_PASSWORD, "BANK_WEBHOOK_SECRET": bank.DEMO_WEBHOOK_SECRET}


def endpoints(crm: CRMService, erp: ERPService, drop: bank.BankService, inventory: InventoryDb) -> dict[str, str]:
    """Where the running demo services are, as the variables the demo spec reads. One list, so a process
    that hands the estate to a subprocess (tests of ``dagster dev``) passes exactly what ``hub demo`` exports."""
    return {"HUB_DEMO_CRM_URL": crm.url, "HUB_DEMO_ERP_WSDL": erp.wsdl_url, "HUB_DEMO_BANK_PORT": str(drop.port),
            "BANK_HOST_KEY_FINGERPRINT": drop.fingerprint, "HUB_DEMO_INVENTORY_URL": inventory.url}


def environment(services: dict[str, Any]) -> dict[str, str]:
    """Every variable the demo spec reads, with the values the running estate *services* (as
    :func:`running` yields them) accept: what ``hub demo --serve`` prints as ``export`` lines."""
    return {**{name: os.environ[name] for name in DEMO_CREDENTIALS},
            **endpoints(services["crm"], services["erp"], services["bank"], services["inventory"])}


@contextmanager
def running(say: Callable[[str], None] = print, *, drip: float | None = None,
            state_dir: Path | None = None) -> Iterator[dict[str, Any]]:
    """Start the CRM (REST), the ERP (SOAP) and the bank (SFTP) on loopback and export what the demo spec
    reads: ``HUB_DEMO_CRM_URL``, ``CRM_TOKEN``, ``HUB_DEMO_ERP_WSDL``, ``ERP_USER``, ``ERP_PASSWORD``,
    ``HUB_DEMO_BANK_PORT``, ``BANK_PASSWORD``, ``BANK_HOST_KEY_FINGERPRINT``, and create the inventory
    database (SQLite, or the database ``HUB_DEMO_INVENTORY_URL`` already names) and export its
    ``HUB_DEMO_INVENTORY_URL``. With *drip*, the bank drops the next day's statement every *drip* seconds
    (for the UI's sensor) and the inventory moves some stock as often. The SQLite inventory lives in
    *state_dir* when given (it persists between demo runs, as the warehouse does), else in a temporary
    folder."""
    for name, value in DEMO_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    started: list[Any] = []
    users_inventory = os.environ.get("HUB_DEMO_INVENTORY_URL")  # a database the user chose for the demo
    try:
        crm = _start(lambda p: CRMService(port=p, token=os.environ["CRM_TOKEN"]), CRM_PORT)
        started.append(crm)
        erp = _start(lambda p: ERPService(port=p, username=os.environ["ERP_USER"],
                                          password=os.environ["ERP_PASSWORD"]), ERP_PORT)
        started.append(erp)
        drop = _start(lambda p: bank.BankService(port=p, password=os.environ["BANK_PASSWORD"]), BANK_PORT)
        started.append(drop)
        inventory = InventoryDb(users_inventory or None, root=state_dir).start()
        started.append(inventory)
        os.environ.update(endpoints(crm, erp, drop, inventory))
        if drip:
            drop.drip(drip)
            inventory.drip(drip)
        say(f"demo CRM (REST) listening on {crm.url}")
        say(f"demo ERP (SOAP) listening on {erp.url} (WSDL {erp.wsdl_url})")
        say(f"demo bank (SFTP) listening on sftp://{bank.DEMO_USER}@127.0.0.1:{drop.port}/outbox "
            f"(host key {drop.fingerprint})")
        say(f"demo inventory (SQL) at {mask_url(inventory.url)}")
        yield {"crm": crm, "erp": erp, "bank": drop, "inventory": inventory}
    finally:
        for service in reversed(started):
            service.stop()
        if users_inventory is None:  # the temporary SQLite file is gone with the estate
            os.environ.pop("HUB_DEMO_INVENTORY_URL", None)
