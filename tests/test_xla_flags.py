"""The XLA flags the test run compiles with (tests/_xla_flags.py)."""

from __future__ import annotations

from _xla_flags import CPU_CODEGEN_FLAG, cpu_only_jax, suite_xla_flags, with_host_devices


def test_the_cpu_codegen_flag_is_added_to_the_given_flags_on_a_cpu_only_jax():
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert cpu_only_jax(env)
    assert suite_xla_flags(env).split() == [env["XLA_FLAGS"], CPU_CODEGEN_FLAG]
    assert suite_xla_flags({"JAX_PLATFORMS": "cpu"}) == CPU_CODEGEN_FLAG


def test_the_flags_stay_as_given_for_a_full_run_or_a_level_already_chosen():
    for env in (
        {"JAX_PLATFORMS": "cpu", "JAXCONV_TEST_FULL": "1", "XLA_FLAGS": "--a=1"},
        {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=2"},
    ):
        assert suite_xla_flags(env) == env["XLA_FLAGS"]


def test_an_installed_accelerator_plugin_keeps_the_flags_as_given(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "jax_plugins" else real(name, *a),
    )
    env = {"XLA_FLAGS": "--a=1"}
    assert not cpu_only_jax(env)
    assert suite_xla_flags(env) == "--a=1"
    assert suite_xla_flags({"JAX_PLATFORMS": "cpu"}) == CPU_CODEGEN_FLAG  # cpu named: added


def test_host_devices_keep_the_given_flags():
    env = {"XLA_FLAGS": CPU_CODEGEN_FLAG}
    assert with_host_devices(env, 4).split() == [
        CPU_CODEGEN_FLAG,
        "--xla_force_host_platform_device_count=4",
    ]
    assert with_host_devices({}, 2) == "--xla_force_host_platform_device_count=2"
