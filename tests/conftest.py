"""Shared fixtures. Tests are hermetic: the model cache lives in a per-session temp folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("EDGEKD_CACHE_DIR", str(tmp_path_factory.mktemp("edgekd-cache")))
    os.environ["EDGEKD_QUIET"] = "1"


@pytest.fixture(scope="session")
def digits():
    from edgekd.data import load_data

    return load_data("builtin:digits")


@pytest.fixture(scope="session")
def digits_teacher():
    from edgekd.models import load_model

    return load_model("builtin:digits-teacher").module
