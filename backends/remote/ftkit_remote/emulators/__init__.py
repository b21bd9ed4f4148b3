"""Loopback emulators of the vast.ai, RunPod and Lambda APIs, each instance backed by a real SSH server.

They exist for tests and demos and double as executable documentation of the providers' APIs: read
``vast.py``, ``runpod.py`` and ``lambda_.py`` for the routes, JSON shapes, status sequences and faults.
"""
