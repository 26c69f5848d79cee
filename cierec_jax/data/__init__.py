"""Datasets: TFDS builders (ArrayRecord), preparation rules and samplers."""
