"""Queues, skills, agents and their states, structural units, and dispatch (who takes which call).

Knows nothing of HTTP or TwiML: functions take a session and ``now`` and return plain results.
"""
