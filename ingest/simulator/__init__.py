"""A HappyRobot API simulator: deterministic synthetic runs, faults and a rate limit, over HTTP.

It shares nothing with `ingest.api` but the payload shape, so it checks the client from outside.
"""

from ingest.simulator.app import FAULTS, Simulator, SimulatorStats, serve

__all__ = ["FAULTS", "Simulator", "SimulatorStats", "serve"]
