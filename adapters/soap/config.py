"""Typed configuration of SOAP systems and sources, as written in a pipeline spec.

A system names the WSDL (URL or file) and how to reach and authenticate to the service; a source names
one operation, its parameters (templated per partition), the repeated element that is one record, and
how the service pages.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.soap._origins import local_path, origin_of
from hub.runtime import xmllimits
from hub.runtime.choice import exactly_one
from hub.runtime.secrets import Address
from hub.runtime.settings import SystemSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsernameTokenConfig(_Strict):
    """WS-Security UsernameToken (OASIS UsernameToken Profile 1.1)."""

    username: Address
    password: str = Field(description="Use ${ENV_VAR}.")
    digest: bool = Field(False, description="Send PasswordDigest (SHA-1 of nonce + created + password) "
                                            "instead of PasswordText.")
    timestamp: bool = Field(True, description="Add a wsu:Timestamp (Created/Expires) to the Security header.")
    timestamp_ttl: int = Field(300, gt=0, description="Seconds between Created and Expires.")


class BasicAuthConfig(_Strict):
    username: Address
    password: str


class ClientCertConfig(_Strict):
    cert: Address = Field(description="PEM file with the client certificate (and the key, unless key is given).")
    key: str | None = Field(None, description="PEM file with the private key.")


class SoapTimeouts(_Strict):
    connect: float = Field(10.0, gt=0)
    read: float = Field(300.0, gt=0, description="Large responses stream for a while; this is per read.")


class SoapSystemConfig(SystemSettings, _Strict):  # retries, rate_limit, circuit_breaker: hub.runtime.settings
    """The ``soap:`` block of a system."""

    wsdl: Address = Field(description="URL or file path of the WSDL (files relative to the project root).")
    service: Address | None = Field(None, description="Service name in the WSDL (default: the first).")
    port: Address | None = Field(None, description="Port name (default: the first port of the SOAP version).")
    soap_version: Literal["1.1", "1.2"] | None = Field(None, description="Pick the port with this binding.")
    address: Address | None = Field(None, description="Endpoint URL overriding the WSDL's port address.")
    basic: BasicAuthConfig | None = None
    username_token: UsernameTokenConfig | None = None
    client_cert: ClientCertConfig | None = None
    verify: bool | str = Field(True, description="TLS verification: true, or a CA bundle path.")
    timeout: float | SoapTimeouts = Field(default_factory=SoapTimeouts)
    wsdl_cache_ttl: int = Field(86_400, ge=0, description="Seconds a downloaded WSDL/XSD is reused (0: never).")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    max_response_bytes: int = Field(4 * 1024**3, gt=0, description="Larger responses are refused; also the cap "
                                    "on the WSDL and all the documents it imports, together.")
    allowed_origins: list[str] = Field(default_factory=list, description=(
        "Where the WSDL's imports (wsdl:import, xs:import/include/redefine) may come from besides the WSDL's "
        "own origin: http(s) origins (https://schemas.example.com[:port]) and local folders (relative ones "
        "below the project root). By default a WSDL fetched over http(s) imports only from its own scheme, "
        "host and port, and a WSDL file only files inside its own folder."))
    max_xml_depth: int = Field(xmllimits.DEFAULT_MAX_DEPTH, ge=4, le=xmllimits.HARD_MAX_DEPTH, description=(
        "Deepest element nesting accepted in a response, counted from the root element (Envelope = 1); "
        "a deeper record refuses the response."))

    @field_validator("allowed_origins")
    @classmethod
    def _origins_or_folders(cls, entries: list[str]) -> list[str]:
        """Each entry an http(s) origin without a path (the rule is per origin, a path would suggest
        otherwise) or a local folder."""
        for entry in entries:
            if origin_of(entry) is not None:
                path = urlsplit(entry).path
                if path not in ("", "/") or urlsplit(entry).query:
                    raise ValueError(f"{entry!r}: an origin is scheme://host[:port], without a path")
            elif local_path(entry) is None:
                raise ValueError(f"{entry!r} is neither an http(s) origin (https://host[:port]) nor a local folder")
        return entries


#: ``paginate.max_pages`` when the spec gives none.
DEFAULT_MAX_PAGES = 10_000


class PageNumberPaging(_Strict):
    param: str = Field(description="Operation parameter carrying the page number.")
    start: int = 1
    size_param: str | None = Field(None, description="Operation parameter carrying the page size.")
    size: int | None = Field(None, gt=0)


class OffsetPaging(_Strict):
    param: str = Field(description="Operation parameter carrying the offset.")
    limit_param: str | None = None
    limit: int = Field(100, gt=0)
    start: int = 0


class TokenPaging(_Strict):
    param: str = Field(description="Operation parameter that sends the continuation token back.")
    element: str = Field(description="Name of the response element holding the next token (absent or "
                                     "empty on the last page).")


class SoapPaging(_Strict):
    page_number: PageNumberPaging | None = None
    offset: OffsetPaging | None = None
    token: TokenPaging | None = None
    max_pages: int = Field(DEFAULT_MAX_PAGES, gt=0, description=(
        "Safety stop against a service that hands out new pages forever (default 10,000): reaching it is an "
        "error. Raise it for sources that really have more pages."))

    @model_validator(mode="after")
    def _exactly_one(self) -> SoapPaging:
        exactly_one(self, ("page_number", "offset", "token"))
        return self


class SoapSourceConfig(_Strict):
    """The SOAP-specific keys of a source."""

    operation: str = Field(description="Operation name in the WSDL.")
    params: dict[str, Any] = Field(default_factory=dict, description="Operation parameters; strings may use "
                                                                     "{{ partition.* }} templating.")
    soap_headers: dict[str, Any] | None = Field(None, description="SOAP header elements, by name.")
    records: str = Field(description="Local name of the repeated response element that is one record, "
                                     "e.g. Order.")
    paginate: SoapPaging | None = None
