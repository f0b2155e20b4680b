"""Typed configuration of SFTP systems, file-drop sources and file formats, as written in a spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator, model_validator

from hub.runtime import xmllimits
from hub.runtime.choice import exactly_one
from hub.runtime.duration import seconds
from hub.runtime.secrets import ADDRESS, Address
from hub.runtime.settings import SystemSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SftpSystemConfig(SystemSettings, _Strict):  # retries, rate_limit, circuit_breaker: hub.runtime.settings
    """The ``sftp:`` block of a system."""

    host: Address
    port: Annotated[int | str, ADDRESS] = Field(22, description="A number, or a ${ENV_VAR} reference resolved at "
                                                                "run time.")
    username: Address
    password: str | None = Field(None, description="Use ${ENV_VAR}.")
    private_key: str | None = Field(None, description="Path to a private key file (RSA, ECDSA, Ed25519), or "
                                                      "the key itself (PEM/OpenSSH text, e.g. from ${ENV_VAR}).")
    passphrase: str | None = Field(None, description="Passphrase of an encrypted private key.")
    known_hosts: str | None = Field(None, description="known_hosts file the server's key must be in.")
    host_key_fingerprint: str | list[str] | None = Field(
        None, description="Pinned SHA256:... fingerprint(s) of the server's host key.")
    insecure_accept_any_host_key: bool = Field(
        False, description="Skip host key verification. Only for throw-away test servers; never in production.")
    connect_timeout: float = Field(15.0, gt=0)
    keepalive: float = Field(30.0, ge=0, description="Seconds between keepalives (0: none).")
    concurrency: int = Field(64, ge=1, le=512, description="SFTP read requests in flight per download.")
    block_size: int = Field(256 * 1024, ge=4096, le=1024 * 1024, description="Bytes per read request.")

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | str) -> int | str:
        if isinstance(v, str) and "${" in v:
            return v
        n = int(v)
        if not 1 <= n <= 65535:
            raise ValueError(f"port must be 1..65535, got {n}")
        return n

    @model_validator(mode="after")
    def _checks(self) -> SftpSystemConfig:
        if not (self.password or self.private_key):
            raise ValueError("expected password or private_key")
        if not (self.known_hosts or self.host_key_fingerprint or self.insecure_accept_any_host_key):
            raise ValueError("host keys are verified: give known_hosts or host_key_fingerprint (or, for a "
                             "throw-away test server only, insecure_accept_any_host_key: true)")
        return self


# --- formats ------------------------------------------------------------------------------------------

class CsvFormat(_Strict):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str | Literal[False] = '"'
    escape_char: str | None = None
    encoding: str = Field("utf-8", description="utf-8 (a BOM is skipped), cp1252, latin-1, ... any Python codec.")
    header: bool = Field(True, description="The first line names the columns.")
    columns: list[str] | None = Field(None, description="Column names when there is no header (or to rename).")
    skip_rows: int = Field(0, ge=0, description="Lines to skip before the header or data (preambles).")
    null_values: list[str] = Field(default_factory=lambda: [""])


class FixedWidthField(_Strict):
    name: str
    start: int = Field(ge=1, description="1-based first column.")
    width: int = Field(ge=1)


class FixedWidthFormat(_Strict):
    layout: str = Field(description="YAML file (relative to the project) with `fields: [{name, start, width}]`.")
    encoding: str = "utf-8"
    skip_rows: int = Field(0, ge=0)
    strip: bool = Field(True, description="Trim the padding of every field.")


class JsonLinesFormat(_Strict):
    encoding: str = "utf-8"


class XmlFormat(_Strict):
    records: str = Field(description="Local name of the element that is one record.")
    max_depth: int = Field(xmllimits.DEFAULT_MAX_DEPTH, ge=4, le=xmllimits.HARD_MAX_DEPTH, description=(
        "Deepest element nesting accepted, counted from the root element (level 1); a deeper record goes "
        "to quarantine unread."))
    process_from: ByteSize | None = Field(None, ge=0, description=(
        "Parse files at least this large (e.g. 32MiB; 0: every file) in a worker process of their own, on another "
        "core while this one downloads, maps and loads: XML parsing holds Python's lock throughout. It costs a "
        "second Python (about 0.3 s to start, 180 MB at its peak), so it pays only with a core to spare. Default: "
        "never (parsed in this process)."))


class ParquetFormat(_Strict):
    pass


FORMATS = ("csv", "fixed_width", "jsonl", "xml", "parquet")


class FormatConfig(_Strict):
    csv: CsvFormat | None = None
    fixed_width: FixedWidthFormat | None = None
    jsonl: JsonLinesFormat | None = None
    xml: XmlFormat | None = None
    parquet: ParquetFormat | None = None
    compression: Literal["auto", "none", "gzip", "zip"] = Field(
        "auto", description="auto: by extension (.gz, .zip).")
    # Decompression bombs: an 8 MB zip can expand to 8 GB. Both limits are per file (all members of a zip
    # together) and enforced while reading; past either one the file fails (not loaded, not archived).
    max_uncompressed_bytes: ByteSize = Field(
        ByteSize(4 << 30), gt=0, description="Most bytes a compressed file may expand to (e.g. 4GiB, 500MB): "
        "above any daily drop the hub is meant for, well below what fills a disk or a day of CPU.")
    max_ratio: float = Field(
        200.0, gt=1, description="Most times its compressed size a file may expand to, once past 16 MiB. "
        "Real CSV and fixed-width text compress 5-50x (up to ~100x for very repetitive text); bombs 1000x.")

    @model_validator(mode="after")
    def _one(self) -> FormatConfig:
        exactly_one(self, FORMATS)
        return self

    @property
    def kind(self) -> str:
        return exactly_one(self, FORMATS)


# --- sources ------------------------------------------------------------------------------------------

DEFAULT_IGNORE = [".*", "*.filepart", "*.tmp", "*.part", "*.partial", "*.crdownload", "*~"]


class FilesConfig(_Strict):
    path: str = Field(description="Remote folder.")
    glob: str = Field("*", description="File name pattern, e.g. statements_*.csv (with recursive: matched "
                                       "against the path below `path`).")
    recursive: bool = False
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE),
                              description="Names never taken: temporary upload names and dotfiles.")
    stable_for: float = Field(30.0, ge=0, description="A file is taken only once its size and mtime have not "
                                                      "changed for this long (e.g. 30s, 5m).")
    done_marker: str | None = Field(None, description="Suffix of a marker file that says an upload is complete, "
                                                      "e.g. .done for x.csv.done; when set, only marked files "
                                                      "are taken (stable_for does not apply).")

    @field_validator("stable_for", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return seconds(v)


class AfterConfig(_Strict):
    """What happens to a file once its rows are committed."""

    move_to: str | None = Field(None, description="Archive folder (created when missing).")
    delete: bool = False

    @model_validator(mode="after")
    def _one(self) -> AfterConfig:
        if self.move_to and self.delete:
            raise ValueError("expected move_to or delete, not both")
        return self


class SensorConfig(_Strict):
    every: float = Field(60.0, ge=1, description="Seconds between sensor ticks (e.g. 60s, 5m).")

    @field_validator("every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return seconds(v)


class SftpSourceConfig(_Strict):
    """The SFTP-specific keys of a source."""

    files: FilesConfig
    format: FormatConfig
    after: AfterConfig = Field(default_factory=AfterConfig, description="move_to, delete, or leave (default).")
    sensor: SensorConfig | None = Field(None, description="Watch the folder: one run per new stable file.")
    # max_bad_rows / max_bad_fraction are keys of every source (hub.spec.models.SourceSpec), not SFTP's own.


class ExportFormat(_Strict):
    csv: CsvFormat | None = None
    fixed_width: FixedWidthFormat | None = None

    @model_validator(mode="after")
    def _one(self) -> ExportFormat:
        exactly_one(self, ("csv", "fixed_width"))
        return self
