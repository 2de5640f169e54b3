"""A local stand-in for the HyperStudy API v3 data API, served by aiohttp over loopback.

It imports nothing from the rest of hyperstudy_bulk, so it can never agree with the client by
accident. Everything it serves is a deterministic function of SimulatorConfig; Dataset computes
the same records without HTTP.
"""

from hyperstudy_bulk.simulator.config import SimulatorConfig
from hyperstudy_bulk.simulator.dataset import DATA_TYPES, Dataset
from hyperstudy_bulk.simulator.faults import FaultSpec
from hyperstudy_bulk.simulator.process import ProcessHandle, serve_in_subprocess
from hyperstudy_bulk.simulator.server import SimulatorHandle, serve, serve_in_thread

__all__ = [
    "DATA_TYPES",
    "Dataset",
    "FaultSpec",
    "ProcessHandle",
    "SimulatorConfig",
    "SimulatorHandle",
    "serve",
    "serve_in_subprocess",
    "serve_in_thread",
]
