"""Config validation on real Hydra composition: every bad value stops before simulating."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from sim.errors import ConfigError
from sim.registry import discover_all
from sim.simulation import simulate
from sim.validate import load_config
from tests.sim.test_cli import REPO


def composed(*overrides: str):
    discover_all()  # every variant's schema in Hydra's ConfigStore, as sim.run and sim.api do
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_compose_and_validate():
    cfg = load_config(composed())
    assert cfg.scheduler.name == "depthwise" and cfg.model.loops == 2 and cfg.hardware.name == "a100_40g"


@pytest.mark.parametrize("override,fragments", [
    ("scheduler.name=fastest", ["scheduler='fastest'", "static", "depthwise"]),
    ("exit.policy=magic", ["exit='magic'", "oracle", "confidence", "none"]),
    ("exit.kv_policy=drop", ["exit.kv_policy='drop'", "ignore", "share"]),
    ("cost.kind=guess", ["cost='guess'", "roofline", "constant"]),
    ("scheduler.batch_size=0", ["scheduler.batch_size=0", ">= 1"]),
    ("scheduler.batch_size=-3", ["scheduler.batch_size=-3"]),
    ("workload.num_requests=0", ["workload.num_requests=0"]),
    ("exit=confidence exit.threshold=1.5", ["exit.threshold=1.5"]),
    ("model.loops=3", ["not divisible by model.loops=3"]),
    ("model.layers_per_block=9", ["model.layers_per_block=9"]),
    ("hardware.memory_gb=0", ["hardware.memory_gb=0"]),
    ("cost=constant cost.loop_step_s=0", ["cost.loop_step_s=0"]),
    ("cost.bandwidth_efficiency=1.5", ["cost.bandwidth_efficiency"]),
    ("model.n_kv_heads=2", ["n_kv_heads"]),
    ("workload.arrival=bursty", ["workload.arrival='bursty'", "offline", "poisson"]),
])
def test_bad_value_names_key(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(composed(*override.split()))
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("overrides,fragment", [
    (["workload=poisson", "workload.rate=0"], "workload.rate=0"),
    (["workload=poisson", "workload.rate=-2"], "workload.rate=-2"),
    (["workload=poisson", "workload.rate=null"], "needs workload.rate"),
])
def test_bad_rates(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(composed(*overrides))


@pytest.mark.parametrize("override", ["scheduler=fastest", "hardware=tpu", "model=gpt5", "exit=magic"])
def test_unknown_group_option_lists_valid_ones(override):
    with pytest.raises(HydraException) as info:
        composed(override)
    assert "Available options" in str(info.value)


def test_wrong_type_refused_at_composition():
    with pytest.raises(HydraException, match="many"):
        composed("scheduler.batch_size=many")


@pytest.mark.parametrize("overrides,key", [
    (["exit=oracle", "exit.threshold=0.5"], "threshold"),  # only exit=confidence has a threshold
    (["cost=constant", "cost.step_overhead_s=0"], "step_overhead_s"),  # a roofline key
    (["cost=roofline", "cost.loop_step_s=0.1"], "loop_step_s"),  # a constant-cost key
])
def test_each_option_has_only_its_own_keys(overrides, key):
    with pytest.raises(HydraException, match=key):
        composed(*overrides)


def test_each_option_is_its_own_typed_config():
    from sim.cost.constant import ConstantCostConfig
    from sim.cost.roofline import RooflineCostConfig
    from sim.exit.confidence import ConfidenceExitConfig

    cfg = load_config(composed("exit=confidence", "exit.threshold=0.5", "cost=constant"))
    assert isinstance(cfg.exit, ConfidenceExitConfig) and cfg.exit.threshold == 0.5
    assert isinstance(cfg.cost, ConstantCostConfig) and not hasattr(cfg.cost, "step_overhead_s")
    cfg = load_config(composed())
    assert isinstance(cfg.cost, RooflineCostConfig) and not hasattr(cfg.exit, "threshold")


def test_a_python_config_gets_its_variants_keys_and_refuses_others():
    from sim.config import RunConfig
    from sim.validate import validate

    cfg = RunConfig()
    cfg.exit.policy, cfg.exit.threshold = "confidence", 0.4
    assert validate(cfg).exit.threshold == 0.4
    cfg = RunConfig()
    cfg.exit.threshold = 0.4  # exit=oracle has no threshold
    with pytest.raises(ConfigError, match="exit.threshold is not a key of exit=oracle"):
        validate(cfg)


def test_misspelled_key_is_refused():
    with pytest.raises((HydraException, OmegaConfBaseException, ConfigError)):
        load_config(composed("scheduler.batchsize=4"))


@pytest.mark.parametrize("scheduler", ["static", "continuous", "sync_exit", "depthwise", "speculative"])
def test_trace_loops_must_match_model_loops_under_every_scheduler(scheduler):
    cfg = load_config(composed("model=smollm2_135m_r3_mc", f"scheduler={scheduler}"))  # the default trace has 2
    with pytest.raises(ConfigError, match="num_loops=2 but model.loops=3"):
        simulate(cfg)


def test_vanilla_model_runs_any_trace_without_exits():
    cfg = load_config(composed("model=smollm2_135m_vanilla", "scheduler=continuous", "progress=false"))
    metrics = simulate(cfg).metrics
    assert metrics["exit_policy"] == "none" and metrics["mean_exit_loop"] == 1.0


def test_a_bundled_config_is_read_only_when_asked_for():
    """`ModelConfig.bundled(name)` has every value of conf/model/<name>.yaml; setting `name`
    on a config only relabels it (no file is read behind an assignment)."""
    from sim.config import HardwareConfig, ModelConfig

    gemma = ModelConfig.bundled("gemma2b_r2")
    assert (gemma.name, gemma.d_model, gemma.vocab, gemma.loops) == ("gemma2b_r2", 2048, 256000, 2)
    assert HardwareConfig.bundled("h100").name == "h100" and HardwareConfig.bundled("h100").memory_gb == 80
    m = ModelConfig()
    m.name = "gemma2b_r2"
    assert m.d_model == ModelConfig().d_model
    with pytest.raises(ConfigError, match="model='gpt5' is not bundled; valid: .*smollm2_135m_r2_mc"):
        ModelConfig.bundled("gpt5")


def test_the_model_shape_is_defined_once():
    """ModelConfig is a ModelShape; a shape read from a mapping (a profile's layout) must
    give exactly the shape's keys as integers."""
    from sim.config import ModelConfig
    from sim.layout import ModelShape

    m = ModelConfig.bundled("smollm2_135m_r3_mc")
    shape = ModelShape.of(m)
    assert isinstance(m, ModelShape) and type(shape) is ModelShape and shape.loops == 3
    assert ModelShape.from_dict(shape.as_dict()) == shape
    assert shape.differing(ModelShape.of(ModelConfig())) == ["loops", "layers_per_block", "coda_layers"]
    with pytest.raises(ValueError, match="vocab missing, dtype unknown"):
        ModelShape.from_dict({**{k: v for k, v in shape.as_dict().items() if k != "vocab"}, "dtype": 2})
    with pytest.raises(ValueError, match="loops='2' is not an integer"):
        ModelShape.from_dict({**shape.as_dict(), "loops": "2"})
