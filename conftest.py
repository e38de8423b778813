"""Pytest setup: tests import the repository as packages (vae, configs, tests)."""
