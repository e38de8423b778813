"""Reporting: tables over runs and sweep members (`summaries`) and matplotlib figures
(`figures`)."""
