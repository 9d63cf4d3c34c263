"""One realistic case on a real log (case_helpers.build_world) and its package, built once
per module for the library's and the command's tests."""

from __future__ import annotations

import pytest

from exchange.cases import build_package

from .case_helpers import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="module")
def package(world: World) -> bytes:
    return build_package(world.case, world.log)
