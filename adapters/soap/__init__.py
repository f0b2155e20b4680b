"""SOAP adapter (zeep + lxml): WSDL-driven sources, typed records streamed from large responses."""

from typing import TYPE_CHECKING

from adapters.soap.config import SoapSourceConfig, SoapSystemConfig
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.soap.client import SoapSource, SoapStats, load_wsdl, select_port

__all__ = ["SoapSource", "SoapSourceConfig", "SoapStats", "SoapSystemConfig", "load_wsdl", "select_port"]

#: Clients load on first use (hub.runtime.lazy): the registry imports only the models.
__getattr__ = lazy(__name__, {
    "SoapSource": "adapters.soap.client",
    "SoapStats": "adapters.soap.client",
    "load_wsdl": "adapters.soap.client",
    "select_port": "adapters.soap.client",
})
