"""Protocol-neutral runtime pieces shared by every adapter: retries, secrets, windows, records."""
