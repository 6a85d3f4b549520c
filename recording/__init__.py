"""Recordings: provider callbacks stored as metadata (callbacks.py), retention dates
(retention.py), encryption at rest (crypto.py), the local/S3 store (storage.py), the download,
purge and erasure jobs (jobs.py) and the hash-chained deletion log (deletion_log.py)."""
