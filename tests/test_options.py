"""jaxlstm.options: ScanOptions (validation, the backend defaults resolved in one place) and
resolve_scan."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jaxlstm import ScanOptions, native
from jaxlstm.native import native_backend
from jaxlstm.options import resolve_scan, runs_native, use_backend
from tests.harness import expect

# --- validation: (call, exception, fragments naming argument, expected, got) -------------------

CALL_CASES = {
    "backend='cuda'": (
        lambda: ScanOptions(backend="cuda"),
        ValueError,
        "backend",
        "'xla', 'native'",
        "got 'cuda'",
    ),
    "unroll=0": (lambda: ScanOptions(unroll=0), ValueError, "unroll", "positive int", "got 0"),
    "unroll=1.5": (
        lambda: ScanOptions(unroll=1.5),
        ValueError,
        "unroll",
        "positive int",
        "got 1.5",
    ),
    "remat='yes'": (lambda: ScanOptions(remat="yes"), TypeError, "remat", "bool", "got 'yes'"),
    "custom_vjp=None": (
        lambda: ScanOptions(custom_vjp=None),
        TypeError,
        "custom_vjp",
        "bool",
        "got None",
    ),
    "unroll=True": (
        lambda: ScanOptions(unroll=True),
        ValueError,
        "unroll",
        "positive int",
        "got True",
    ),
    "unroll='8'": (
        lambda: ScanOptions(unroll="8"),
        ValueError,
        "unroll",
        "positive int",
        "got '8'",
    ),
    "fuse_directions=1": (
        lambda: ScanOptions(fuse_directions=1),
        TypeError,
        "fuse_directions",
        "bool",
        "got 1 of type int",
    ),
    "resolve_scan(dict)": (
        lambda: resolve_scan({"remat": True}),
        TypeError,
        "scan",
        "jaxlstm.ScanOptions or None",
        "got dict",
    ),
    "resolve_scan(unresolved class)": (
        lambda: resolve_scan(ScanOptions),
        TypeError,
        "scan",
        "ScanOptions or None",
        "got type",
    ),
}


@pytest.mark.parametrize("case", CALL_CASES.values(), ids=CALL_CASES.keys())
def test_call_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


# --- the backend defaults -----------------------------------------------------------------------

DEFAULTS = {
    # backend: (unroll, fuse_directions)
    "cpu": (1, False),
    "gpu": (8, True),
    "tpu": (1, True),
}


@pytest.mark.parametrize("backend", DEFAULTS)
def test_resolve_fills_the_backend_defaults(backend):
    unroll, fuse = DEFAULTS[backend]
    recurrence = "native" if backend == "cpu" and native_backend().available else "xla"
    for remat, custom_vjp in ((False, True), (True, False)):
        options = ScanOptions(remat=remat, custom_vjp=custom_vjp)
        assert options.resolve(backend) == ScanOptions(
            unroll=unroll,
            custom_vjp=custom_vjp,
            remat=remat,
            fuse_directions=fuse,
            backend=recurrence,
        )


@pytest.fixture
def no_kernel(monkeypatch):
    """The native kernel as if this install had been built without a compiler."""
    monkeypatch.setattr(native, "_load", lambda: ({}, "built without a compiler (test)"))


def test_without_the_kernel_the_default_is_xla_and_asking_for_it_says_why(no_kernel):
    assert ScanOptions().resolve("cpu").backend == "xla"
    assert not native_backend().available
    assert native_backend().reason == "built without a compiler (test)"
    expect(
        ValueError,
        lambda: ScanOptions(backend="native").resolve("cpu"),
        "backend='native' is unavailable",
        "built without a compiler (test)",
    )


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_native_is_refused_off_the_cpu_and_never_the_default_there(platform):
    assert ScanOptions().resolve(platform).backend == "xla"
    expect(
        ValueError,
        lambda: ScanOptions(backend="native").resolve(platform),
        "backend='native' runs on the CPU only",
        repr(platform),
    )


def test_use_backend_changes_what_none_means_and_restores_it():
    before = ScanOptions().resolve("cpu").backend
    with use_backend("xla"):
        assert ScanOptions().resolve("cpu").backend == "xla"
        assert ScanOptions(backend="native").resolve("cpu").backend == "native" or not (
            native_backend().available
        )
    assert ScanOptions().resolve("cpu").backend == before
    expect(ValueError, lambda: use_backend("cuda").__enter__(), "backend", "got 'cuda'")


RUNS_NATIVE = {
    # id: (options, dtype, forward_mode, expected)
    "float32": (ScanOptions(backend="native"), jnp.float32, False, True),
    "xla": (ScanOptions(backend="xla"), jnp.float32, False, False),
    "float64": (ScanOptions(backend="native"), jnp.float64, False, False),
    "bfloat16": (ScanOptions(backend="native"), jnp.bfloat16, False, False),
    "remat": (ScanOptions(backend="native", remat=True), jnp.float32, False, False),
    "no custom_vjp": (ScanOptions(backend="native", custom_vjp=False), jnp.float32, False, False),
    "forward mode": (ScanOptions(backend="native"), jnp.float32, True, False),
}


@pytest.mark.parametrize("case", RUNS_NATIVE.values(), ids=RUNS_NATIVE.keys())
def test_runs_native_only_where_the_kernel_supports_the_call(case):
    options, dtype, forward_mode, expected = case
    assert runs_native(options, dtype, forward_mode=forward_mode) is expected


@pytest.mark.parametrize("backend", DEFAULTS)
def test_resolve_keeps_explicit_values(backend):
    for unroll, fuse in ((3, False), (1, True), (16, False)):
        options = ScanOptions(unroll=unroll, fuse_directions=fuse, remat=True, backend="xla")
        assert options.resolve(backend) == options
    assert ScanOptions(unroll=2).resolve(backend).unroll == 2
    assert ScanOptions(fuse_directions=True).resolve(backend).fuse_directions is True


def test_resolve_without_a_backend_uses_jaxs_default_backend():
    assert ScanOptions().resolve() == ScanOptions().resolve(jax.default_backend())
    remat = ScanOptions(remat=True)
    assert remat.resolve(None) == remat.resolve(jax.default_backend())


def test_resolve_scan():
    here = jax.default_backend()
    assert resolve_scan(None) == ScanOptions().resolve(here)
    assert None not in dataclasses.astuple(resolve_scan(None))
    options = ScanOptions(unroll=4, custom_vjp=False, remat=True)
    assert resolve_scan(options) == options.resolve(here)
    assert resolve_scan(options).unroll == 4


def test_options_are_frozen_and_hashable():
    # Hashable and compared by value: they are static arguments and cache keys.
    assert hash(ScanOptions(remat=True)) == hash(ScanOptions(remat=True))
    assert ScanOptions(remat=True) != ScanOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ScanOptions().unroll = 2
