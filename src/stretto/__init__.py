"""stretto: run many CLI coding agents on one repository at once; land only verified work."""

__version__ = "0.1.0"
