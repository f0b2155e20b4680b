"""The demo estate: local services in the shape of real legacy systems."""
