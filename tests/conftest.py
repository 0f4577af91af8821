"""Shared test setup: offline hub, bounded threads, and a guard that fails any non-loopback connection."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkAccessError(RuntimeError):
    """Raised when a test tries to reach anything but this machine."""


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: not allowed


def _guarded(real):
    def connect(self, address):
        if not _is_local(address):
            raise NetworkAccessError(f"test tried to open a network connection to {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    yield


@pytest.fixture(scope="session")
def tiny_model():
    """A small random MuQ-MuLan (seeded, eval mode, tokenizer from the bundled all-MiniLM-L6-v2 files).
    Shared by the whole session: do not modify its weights; build your own for training tests."""
    import torch

    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(0)
    return MuQMuLan(MuQMuLanConfig.tiny()).eval()


def pytest_configure(config):
    from muq_model.runtime import configure_threads

    configure_threads()
