"""Comptoir's agent: a privileged loopback service that serves WAPT's agent API (ADR 5)."""
