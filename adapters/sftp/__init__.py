"""SFTP adapter (asyncssh): verified host keys, stable-file detection, fast downloads, file formats."""

from adapters.sftp._formats import ReadNotes, load_layout, read_xml
from adapters.sftp._session import AuthenticationError, HostKeyError, RemoteFile, SftpSession
from adapters.sftp.client import LocalCopy, SftpSource, ready
from adapters.sftp.config import (
    CsvFormat,
    ExportFormat,
    FixedWidthFormat,
    FormatConfig,
    SftpSourceConfig,
    SftpSystemConfig,
)

__all__ = ["AuthenticationError", "CsvFormat", "ExportFormat", "FixedWidthFormat", "FormatConfig", "HostKeyError",
           "LocalCopy", "ReadNotes", "RemoteFile", "SftpSession", "SftpSource", "SftpSourceConfig", "SftpSystemConfig",
           "load_layout", "read_xml", "ready"]
