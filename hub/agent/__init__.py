"""The agent layer: a catalog of what the systems offer (actions), guarded calls, and an MCP server."""
