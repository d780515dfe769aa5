"""Datasets: procedural Airplanes and Kinetics-600 (real layout or synthetic stand-in)."""
