"""Engines: where the audio comes from (see base.py). No Django imports in here."""
