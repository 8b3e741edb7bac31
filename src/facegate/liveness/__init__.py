"""Liveness: an active challenge (blink, turn, open mouth) with a flat-photo check.

The pure parts (signals, planarity, the session state machine) take landmark arrays and know
nothing about models or sockets; `landmarks` and `frames` turn an image into those arrays.
"""
