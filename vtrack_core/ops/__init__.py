"""Pieces several trackers share: device-side crops, cross-correlation."""
