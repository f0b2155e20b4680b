"""SFTP adapter (asyncssh): verified host keys, stable-file detection, fast downloads, file formats."""

from typing import TYPE_CHECKING

from adapters.sftp.config import (
    CsvFormat,
    ExportFormat,
    FixedWidthFormat,
    FormatConfig,
    SftpSourceConfig,
    SftpSystemConfig,
)
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.sftp._formats import ReadNotes, csv_columns, fixed_width_batch, load_layout, read_xml
    from adapters.sftp._session import AuthenticationError, HostKeyError, RemoteFile, SftpSession
    from adapters.sftp.client import Fetching, LocalCopy, SftpSource, ready

__all__ = [
    "AuthenticationError",
    "CsvFormat",
    "ExportFormat",
    "Fetching",
    "FixedWidthFormat",
    "FormatConfig",
    "HostKeyError",
    "LocalCopy",
    "ReadNotes",
    "RemoteFile",
    "SftpSession",
    "SftpSource",
    "SftpSourceConfig",
    "SftpSystemConfig",
    "csv_columns",
    "fixed_width_batch",
    "load_layout",
    "read_xml",
    "ready",
]

#: Clients load on first use (hub.runtime.lazy): the registry imports only the models.
__getattr__ = lazy(__name__, {
    "ReadNotes": "adapters.sftp._formats",
    "csv_columns": "adapters.sftp._formats",
    "fixed_width_batch": "adapters.sftp._formats",
    "load_layout": "adapters.sftp._formats",
    "read_xml": "adapters.sftp._formats",
    "AuthenticationError": "adapters.sftp._session",
    "HostKeyError": "adapters.sftp._session",
    "RemoteFile": "adapters.sftp._session",
    "SftpSession": "adapters.sftp._session",
    "Fetching": "adapters.sftp.client",
    "LocalCopy": "adapters.sftp.client",
    "SftpSource": "adapters.sftp.client",
    "ready": "adapters.sftp.client",
})
