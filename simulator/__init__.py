"""Drives the real webhooks like the provider would, on a virtual clock, with simulated callers
and agents (``flask simulate``; reader of the Anonymous Bank call records in :mod:`.data`)."""
