"""Personas, as agents use them. The model lives in the catalog (`gathering.catalog.personas`),
below agents, beside the personas library; it is re-exported here for existing imports."""

from __future__ import annotations

from gathering.catalog.personas import NO_NUL, Item, Persona

__all__ = ["NO_NUL", "Item", "Persona"]
