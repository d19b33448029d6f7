"""normlab.registry: names, aliases, "gn:32" specs, create(), factory(), available()."""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import re

import pytest
import torch
from torch import nn

import normlab
from normlab import registry
from normlab.errors import ConfigError, NormlabError, UnknownNameError

CANONICAL = {
    "batch_norm": normlab.BatchNorm,
    "group_norm": normlab.GroupNorm,
    "instance_norm": normlab.InstanceNorm,
    "layer_norm": normlab.LayerNorm,
    "rms_norm": normlab.RMSNorm,
}
ALIASES = {
    "bn": "batch_norm",
    "ln": "layer_norm",
    "in": "instance_norm",
    "gn": "group_norm",
    "rms": "rms_norm",
}


def test_available_lists_the_registered_names():
    names = normlab.available()
    assert isinstance(names, list)
    assert all(isinstance(n, str) for n in names)
    assert len(names) == len(set(names)), "duplicate names"
    assert set(CANONICAL) <= set(names)
    for alias in ALIASES:
        assert alias not in names, f"alias {alias!r} listed as a canonical name"
    for name in names:
        entry = registry.lookup(name)
        assert entry.name == name
    # available() is a snapshot: mutating it does not change the registry
    names.append("not_a_norm")
    assert "not_a_norm" not in normlab.available()


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_lookup_entry_fields(name):
    entry = registry.lookup(name)
    assert entry.name == name
    assert entry.cls is CANONICAL[name]
    assert isinstance(entry.summary, str)
    assert entry.summary.strip()
    assert isinstance(entry.paper, str)
    assert entry.paper.strip()
    assert isinstance(tuple(entry.aliases), tuple)


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_every_alias_resolves(alias, name):
    entry = registry.lookup(alias)
    assert entry.name == name
    assert alias in tuple(entry.aliases)
    layer = normlab.create(alias, 32)  # GroupNorm defaults to 32 groups
    assert isinstance(layer, CANONICAL[name])
    assert layer.num_features == 32


def test_every_registered_alias_resolves_to_its_entry():
    for name in normlab.available():
        entry = registry.lookup(name)
        for alias in entry.aliases:
            assert registry.lookup(alias).name == name


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_create_by_canonical_name(name):
    layer = normlab.create(name, 64)  # GroupNorm defaults to 32 groups
    assert type(layer) is CANONICAL[name]
    assert layer.num_features == 64
    y = layer(torch.randn(2, 64, 3))
    assert y.shape == (2, 64, 3)


def test_create_passes_keyword_arguments():
    bn = normlab.create("bn", 8, momentum=None, eps=1e-3, affine=False)
    assert bn.momentum is None
    assert bn.eps == 1e-3
    assert bn.weight is None
    ln = normlab.create("ln", 8, per_position=True, channel_dim=-1)
    assert ln.per_position is True
    assert ln.channel_dim == -1


def test_group_spec_sets_num_groups():
    assert normlab.create("gn:16", 64).num_groups == 16
    assert normlab.create("group_norm:8", 64).num_groups == 8
    assert normlab.create("gn", 64).num_groups == 32
    assert normlab.factory("gn:4")(12).num_groups == 4


def test_group_spec_divisibility_error():
    with pytest.raises(ConfigError) as excinfo:
        normlab.create("gn:5", 64)
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "64" in msg
    assert "5" in msg


@pytest.mark.parametrize("channels", [8, 16, 32, 64])
def test_factory_builds_layers_for_any_channel_count(channels):
    norm_layer = normlab.factory("gn", num_groups=4)
    layer = norm_layer(channels)
    assert isinstance(layer, normlab.GroupNorm)
    assert layer.num_features == channels
    assert layer.num_groups == 4
    assert norm_layer(channels) is not layer  # a fresh layer per call


def test_factory_is_a_norm_layer_callable_for_a_model():
    def make_net(norm_layer):  # the torchvision / timm norm_layer= convention
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            norm_layer(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            norm_layer(16),
        )

    for spec, kw in [("bn", {}), ("gn:4", {}), ("ln", {"eps": 1e-6}), ("in", {"affine": True})]:
        net = make_net(normlab.factory(spec, **kw))
        norms = [m for m in net.modules() if isinstance(m, tuple(CANONICAL.values()))]
        assert [m.num_features for m in norms] == [8, 16]
        for m in norms:
            for key, value in kw.items():
                assert getattr(m, key) == value
        y = net(torch.randn(2, 3, 5, 5))
        assert y.shape == (2, 16, 5, 5)
        assert torch.isfinite(y).all()


def test_functools_partial_style_norm_layer():
    norm_layer = functools.partial(normlab.create, "gn", num_groups=2)
    layer = norm_layer(6)
    assert isinstance(layer, normlab.GroupNorm)
    assert layer.num_groups == 2
    assert layer.num_features == 6
    eps_factory = normlab.factory("bn", eps=1e-3, momentum=0.01)
    assert eps_factory(5).eps == 1e-3
    assert eps_factory(5).momentum == 0.01


def test_factory_accepts_call_time_kwargs_like_partial():
    # timm calls norm_layer(dim, eps=1e-6); like functools.partial, call-time keywords are
    # added to (and override) the bound ones.
    norm_layer = normlab.factory("gn", num_groups=4, eps=1e-3)
    layer = norm_layer(16, eps=1e-6, affine=False)
    assert layer.eps == 1e-6
    assert layer.affine is False
    assert layer.num_groups == 4
    assert normlab.factory("ln")(8, eps=1e-6).eps == 1e-6


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("goup_norm", "group_norm"),
        ("batch_nrom", "batch_norm"),
        ("layer_nrm", "layer_norm"),
        ("rms_nrm", "rms_norm"),
    ],
)
def test_unknown_name_suggests_close_match(typo, suggestion):
    with pytest.raises(UnknownNameError, match=rf"Did you mean '{suggestion}'") as excinfo:
        normlab.create(typo, 8)
    err = excinfo.value
    assert isinstance(err, NormlabError)
    assert isinstance(err, ValueError)
    assert typo in str(err)


def test_unknown_short_name_suggests_alias_or_name():
    with pytest.raises(UnknownNameError) as excinfo:
        normlab.create("bnn", 8)
    msg = str(excinfo.value)
    assert re.search(r"Did you mean '(bn|batch_norm)'", msg), msg


def test_unknown_name_via_lookup_and_factory():
    with pytest.raises(UnknownNameError, match="Did you mean 'group_norm'"):
        registry.lookup("goup_norm")
    with pytest.raises(UnknownNameError):
        normlab.factory("goup_norm")(8)


def test_unknown_name_without_close_match_lists_known_names():
    with pytest.raises(UnknownNameError) as excinfo:
        normlab.create("zzzzqqq", 8)
    msg = str(excinfo.value)
    assert "zzzzqqq" in msg
    assert "batch_norm" in msg
    assert "group_norm" in msg


@pytest.mark.parametrize("spec", ["gn:abc", "bn:3", "gn:", "gn:0", "gn:-2", "gn:2:3", "ln:4"])
def test_malformed_spec_is_a_clear_error(spec):
    with pytest.raises(NormlabError) as excinfo:
        normlab.create(spec, 64)
    err = excinfo.value
    assert isinstance(err, ValueError)
    assert not isinstance(err, UnknownNameError) or spec.split(":")[0] not in ALIASES, (
        f"{spec!r}: the name part is valid; the error should be about the argument"
    )
    msg = str(err)
    assert spec in msg or spec.split(":", 1)[1] in msg, msg


# -- names derived from the method files' ENTRIES blocks ------------------------------------------


def test_package_names_derive_from_the_discovered_entries():
    """Every entry of a normlab.norms method file is registered, exported as normlab.<Class>
    and normlab.norms.<Class>, and its functional forms and helpers are published."""
    discovered = normlab.norms.entries()
    assert {e.name for e in discovered} <= set(normlab.available())
    assert len(discovered) >= len(CANONICAL)
    for entry in discovered:
        assert registry.lookup(entry.name) is entry
        name = entry.cls.__name__
        assert getattr(normlab, name) is entry.cls, name
        assert getattr(normlab.norms, name) is entry.cls, name
        assert name in normlab.__all__ and name in normlab.norms.__all__ and name in dir(normlab)
        assert entry.functional, f"{entry.name} declares no functional form"
        for fn in entry.functional:
            assert getattr(normlab.functional, fn.__name__) is fn
            assert fn.__name__ in normlab.functional.__all__
        for helper in entry.exports:
            assert getattr(normlab, helper.__name__) is helper
            assert helper.__name__ in normlab.__all__
        assert entry.summary and entry.summary[0].isupper(), entry.summary
        if entry.fitting is not None:  # a valid spec of this very entry
            assert registry.lookup(entry.fitting.partition(":")[0]) is entry


def test_every_exported_class_and_functional_has_an_entry():
    """Nothing in __all__ is a layer or functional form without an entry (no hand-kept list)."""
    classes = {e.cls for e in normlab.norms.entries()}
    forms = {fn for e in (*normlab.norms.entries(), *normlab.reparam.entries())
             for fn in e.functional}
    for name in normlab.__all__:
        obj = getattr(normlab, name)
        if isinstance(obj, type) and issubclass(obj, normlab.Norm) and obj is not normlab.Norm:
            assert obj in classes, name
    assert {getattr(normlab.functional, n) for n in normlab.functional.__all__} == forms


def test_discover_rejects_a_malformed_entries_block(tmp_path, monkeypatch):
    package = tmp_path / "fake_norms"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_helper.py").write_text("ENTRIES = 'ignored: private module'\n")
    (package / "broken.py").write_text("ENTRIES = ['not an Entry']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_norms

    with pytest.raises(TypeError, match=r"fake_norms\.broken\.ENTRIES must be a tuple"):
        normlab.norms.discover(fake_norms)


def test_register_refuses_a_taken_name_or_alias():
    entry = registry.lookup("gn")
    clash = dataclasses.replace(entry, name="group_norm_twin", aliases=("gn",))
    with pytest.raises(ValueError, match="'gn' is already registered to 'group_norm'"):
        registry.register(clash)
    assert "group_norm_twin" not in normlab.available()


@pytest.mark.parametrize("module", [normlab, normlab.norms, normlab.functional])
def test_type_checking_names_are_the_discovered_ones(module):
    """The TYPE_CHECKING imports (what a static type checker sees) name discovered objects
    only; a method missing there still works at runtime, with less precise static types."""
    tree = ast.parse(inspect.getsource(module))
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        source = importlib.import_module(node.module)
        for alias in node.names:
            assert alias.asname == alias.name  # an explicit re-export
            assert alias.name in module.__all__, alias.name
            assert getattr(module, alias.name) is getattr(source, alias.name), alias.name
