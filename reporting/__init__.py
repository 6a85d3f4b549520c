"""Read-only aggregates over the call log: service level, answer and abandonment rates, ASA, talk time."""
