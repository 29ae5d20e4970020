"""The bottom layer: what every other package uses and nothing here imports from above."""
