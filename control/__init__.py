"""Detections -> actions: calibration, tracking, steering, focus, find-and-image workflows."""
