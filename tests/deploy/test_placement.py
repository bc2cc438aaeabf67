"""Per-role Ray placement: the config's rules and the options the launcher gives `ray.remote`."""

from __future__ import annotations

import pytest
import ray

from deepretrieval.common.config import validate_config
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.train_config import PlacementConfig, RolePlacement
from deepretrieval.deploy.launcher import actor_options


class _Worker:
    def run(self) -> None:
        return None


def test_default_placement_reserves_nothing_as_before():
    # One machine: every worker starts whatever the core count (the launcher's behaviour before placement existed).
    assert actor_options(RolePlacement()) == {"num_cpus": 0.0, "num_gpus": 0.0, "max_restarts": 0}


def test_cluster_placement_becomes_ray_options_ray_accepts():
    placement = RolePlacement(num_gpus=1, resources={"actor": 1})
    options = actor_options(placement)
    assert options == {"num_cpus": 0.0, "num_gpus": 1.0, "max_restarts": 0, "resources": {"actor": 1.0}}
    handle_factory = ray.remote(**options)(_Worker)  # Ray validates actor options here, before any cluster exists
    assert handle_factory is not None


def test_ray_refuses_what_the_config_refuses():
    # The config's rule mirrors Ray's: CPU and GPU are not custom resources.
    with pytest.raises(ValueError, match="num_gpus"):
        ray.remote(num_cpus=0, resources={"GPU": 1})(_Worker)
    with pytest.raises(ConfigError, match="not a custom resource name"):
        validate_config(RolePlacement, {"resources": {"GPU": 1}})


@pytest.mark.parametrize(("data", "field"), [
    ({"actor": {"resources": {"actor": 0}}}, "must be > 0"),
    ({"actor": {"num_gpus": -1}}, "actor.num_gpus"),
    ({"acter": {}}, "acter"),
])
def test_bad_placement_names_the_field(data, field):
    with pytest.raises(ConfigError, match=field):
        validate_config(PlacementConfig, data)
