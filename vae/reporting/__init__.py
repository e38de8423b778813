"""Reporting: tables over runs and sweep members (`summaries`), image grids (`plots`) and
matplotlib figures (`figures`)."""
