"""Fixtures shared by the integration tests."""

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for one test module (2 CPUs, no dashboard)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
