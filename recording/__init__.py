"""Recordings: provider callbacks stored as metadata (download, encryption and retention build on it)."""
