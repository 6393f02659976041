"""Fixtures shared by the host tier's modules."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="module")
def pack(comfy):
    """The modules of the pack copy that ComfyUI loaded (objects passed to its nodes must come from it)."""
    node_mod = sys.modules[comfy.node("BoLIDApply").__module__]
    root = node_mod.__name__.rsplit(".nodes.", 1)[0]

    class Pack:
        nodes = node_mod
        patch = sys.modules[root + ".bolid_lib.method.patch"]
        adapter = sys.modules[root + ".bolid_lib.method.adapter"]
        errors = sys.modules[root + ".bolid_lib.errors"]
        sdxl = sys.modules[root + ".bolid_lib.method.sdxl_layers"]
        embedding = __import__(root + ".bolid_lib.method.embedding", fromlist=["BodyEmbedding"])

    return Pack
