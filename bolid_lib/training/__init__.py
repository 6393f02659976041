"""Trainers and their datasets and losses."""
