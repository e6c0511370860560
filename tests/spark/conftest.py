"""The Spark tests' one session (local[2], started once: about 7 s) and their config."""

from __future__ import annotations

import dataclasses

import pytest

from dmp.config import Config
from dmp.matrix import spark as engine

pytest.importorskip("pyspark")


@pytest.fixture(scope="session")
def spark():
    """Return the process's SparkSession on local[2] (dmp.matrix.spark makes it once)."""
    return engine.session(Config(engine="spark", spark_master="local[2]"))


@pytest.fixture
def spark_config(config: Config, spark) -> Config:
    """Return the test's config with the Spark engine (the session already running)."""
    return dataclasses.replace(config, engine="spark", spark_master="local[2]")
