"""SFTP adapter (asyncssh): verified host keys, stable-file detection, fast downloads, file formats."""

from adapters.sftp._formats import ReadNotes
from adapters.sftp._session import AuthenticationError, HostKeyError, RemoteFile, SftpSession
from adapters.sftp.client import LocalCopy, SftpSource, ready
from adapters.sftp.config import SftpSourceConfig, SftpSystemConfig

__all__ = ["AuthenticationError", "HostKeyError", "LocalCopy", "ReadNotes", "RemoteFile", "SftpSession", "SftpSource",
           "SftpSourceConfig", "SftpSystemConfig", "ready"]
