"""agentd: the in-sandbox agent runtime daemon."""

__version__ = "0.1.0"
