from __future__ import annotations

import pytest

from batchain.sandbox.config import ConfigError, SandboxConfig, header_overrides


def test_defaults_are_safe() -> None:
    config = SandboxConfig()
    assert config.latency_ms == 0 and config.rpm is None and config.error_rate == 0
    assert config.shuffle_results and config.simulate_prompt_cache and config.seed == 0


def test_merge_coerces_and_validates() -> None:
    config = SandboxConfig().merged({"latency_ms": "50", "rpm": "100", "shuffle_results": "false"})
    assert config.latency_ms == 50.0 and config.rpm == 100 and config.shuffle_results is False
    assert config.merged({"rpm": None}).rpm is None
    assert config.merged({"batch_expire_after_fraction": "none"}).batch_expire_after_fraction is None
    with pytest.raises(ConfigError):
        config.merged({"error_rate": 2})
    with pytest.raises(ConfigError):
        config.merged({"nope": 1})
    with pytest.raises(ConfigError):
        config.merged({"rpm": 1.5})
    assert SandboxConfig.from_dict(config.to_dict()) == config


def test_header_overrides() -> None:
    raw = [(b"x-sandbox-latency-ms", b"200"), (b"authorization", b"Bearer x")]
    assert header_overrides(raw) == {"latency_ms": 200.0}
    with pytest.raises(ConfigError):
        header_overrides([(b"x-sandbox-rpm", b"5")])
