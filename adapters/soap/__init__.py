"""SOAP adapter (zeep + lxml): WSDL-driven sources, typed records streamed from large responses."""

from adapters.soap.client import SoapSource, SoapStats, load_wsdl, select_port
from adapters.soap.config import SoapSourceConfig, SoapSystemConfig

__all__ = ["SoapSource", "SoapSourceConfig", "SoapStats", "SoapSystemConfig", "load_wsdl", "select_port"]
