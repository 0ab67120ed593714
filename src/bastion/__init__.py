"""Bastion: an MCP gateway that identifies, decides, masks, holds for approval and records every call."""

__version__ = "0.1.0"
