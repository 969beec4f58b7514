"""Accounts and credentials, with no HTTP: users, passwords, tokens, API keys, revocation,
sessions, the signing key, principals and the audit store.

The HTTP side (dependencies, hosts, headers, the rate-limit gate) is `gathering.api.security`.
"""
