"""Every module of traffik-core declares its public names, and they all resolve."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import traffik

NOT_IMPORTABLE = {
    "traffik.backends.multiprocess",
    "traffik.backends.redis.coredis",
    "traffik.backends.memcached.emcache",
}
"""traffik 1.2's module path, kept only to say what to use instead (test_traffik12_surface)."""

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(traffik.__path__, "traffik.")
    if name.startswith(("traffik.backends.", "traffik.strategies.", "traffik.testing."))
    or name.count(".") == 1
    if not name.rsplit(".", 1)[-1].startswith("_")
    and name.split(".")[2:3] not in (["redis"], ["memcached"])
    and not name.startswith("traffik.fastapi")
    and name not in NOT_IMPORTABLE
)


@pytest.mark.parametrize("module_name", MODULES)
def test_module_all_is_explicit_unique_and_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = module.__dict__.get("__all__")
    assert isinstance(exported, list), f"{module_name} has no __all__ list"
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ repeats a name"
    for name in exported:
        assert getattr(module, name) is not None, f"{module_name}.{name}"


def test_top_level_exports() -> None:
    assert {"Rate", "HTTPThrottle", "WebSocketThrottle", "InMemoryBackend", "EXEMPTED"} <= set(
        traffik.__all__
    )
    for name in traffik.__all__:
        assert getattr(traffik, name) is not None
    with pytest.raises(AttributeError):
        traffik.DoesNotExist  # noqa: B018


def test_type_checkers_see_every_name_traffik_imports_on_first_use() -> None:
    # `traffik.__getattr__` imports its names on first use; type checkers and IDEs read the
    # `if TYPE_CHECKING:` imports instead: the two lists must stay the same.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(traffik))
    seen: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    seen[alias.asname or alias.name] = str(statement.module)
    assert seen == {name: module for name, (module, _) in traffik._LAZY.items()}


def test_http_throttle_spells_out_every_argument_of_throttle() -> None:
    # `HTTPThrottle.__init__` repeats `Throttle.__init__`'s signature (for type checkers),
    # adding `use_method`: the same names, kinds and defaults.
    import inspect

    from traffik.throttles import HTTPThrottle, Throttle

    base = dict(inspect.signature(Throttle.__init__).parameters)
    http = dict(inspect.signature(HTTPThrottle.__init__).parameters)
    added = http.pop("use_method")
    assert (added.kind, added.default) == (inspect.Parameter.KEYWORD_ONLY, True)
    assert list(http) == list(base)
    for name, parameter in base.items():
        assert (http[name].kind, http[name].default, http[name].annotation) == (
            parameter.kind,
            parameter.default,
            parameter.annotation,
        ), name
