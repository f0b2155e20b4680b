"""Hub: YAML pipeline specs over REST, SOAP, SFTP and SQL systems, orchestrated by Dagster."""

__version__ = "0.1.0"
