"""Tracker implementations; reach them through vtrack_core.registry, not directly."""
