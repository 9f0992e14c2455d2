"""Benchmarks: mailctl side by side with Dovecot (see bench/README.md)."""
