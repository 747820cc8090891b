"""The launch files take their arguments from one module, launch/vtrack_launch_common.py.

`launch` and `launch_ros` are not on PyPI, so the launch files cannot run here
(test_launch_tracker.py runs tracker.launch.py under `colcon test` on a ROS install). This
test reads them with `ast`: each imports the shared module from its own folder, declares
its arguments only through it, and uses only arguments it declares. Then it executes them
the way `launch` loads a launch file, against minimal stand-ins for the launch API, to check
that the import from beside the file works and what the tracker node is built with.
"""
from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
COMMON = LAUNCH / "vtrack_launch_common.py"
LAUNCH_FILES = ("tracker.launch.py", "demo.launch.py")
# What each launch file offers on the command line (ros2 launch ... NAME:=VALUE).
EXPECTED = {
    "tracker.launch.py": {"tracker", "device", "image", "params_file", "namespace", "lifecycle"},
    "demo.launch.py": {"source", "rate", "loop", "tracker", "device", "params_file", "init_box", "init_delay",
                       "hold_first_frame"},
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _string_args(call: ast.Call) -> list[str]:
    names = []
    for arg in call.args:
        assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
            f"line {call.lineno}: argument names must be string literals, got {ast.dump(arg)}")
        names.append(arg.value)
    return names


def _shared_arguments() -> set[str]:
    """Keys of ARGUMENTS in the shared module, as written."""
    for node in _tree(COMMON).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ARGUMENTS" for t in node.targets):
            assert isinstance(node.value, ast.Dict)
            return {key.value for key in node.value.keys}
    raise AssertionError("vtrack_launch_common.py defines no ARGUMENTS dict")


def _shared_tuple(name: str) -> set[str]:
    for node in _tree(COMMON).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"vtrack_launch_common.py defines no {name}")


def _declared_and_used(path: Path) -> tuple[list[str], set[str]]:
    """(names passed to common.declare_arguments, names read through common.config / .value)."""
    declared, used = [], set()
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        assert name != "DeclareLaunchArgument", (
            f"{path.name} line {node.lineno}: declares an argument itself; define it in vtrack_launch_common.py")
        if name == "LaunchConfiguration":
            raise AssertionError(f"{path.name} line {node.lineno}: read arguments through common.config / common.value")
        if name == "declare_arguments":
            declared += _string_args(node)
        elif name == "config" or (name == "arg" and isinstance(node.func, ast.Name)):
            used.update(_string_args(node))
        elif name in ("value", "flag") and node.args:
            # common.value(context, NAME) or the local value(NAME) helper around it; common.flag(context, NAME)
            last = node.args[-1]
            if isinstance(last, ast.Constant) and isinstance(last.value, str):
                used.add(last.value)
    return declared, used


def test_shared_module_is_installed_with_the_launch_files():
    """CMake installs launch/ as a whole (so the shared module lands beside the launch files
    in share/vtrack_ros/launch), and tools/setup.sh copies launch/ for its CMake build."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME}" in cmake
    assert '"$ROOT/launch"' in (ROOT / "tools" / "setup.sh").read_text()
    assert not COMMON.name.endswith("launch.py"), "ros2 launch would offer the shared module as a launch file"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_file_imports_the_shared_module_from_beside_itself(launch_file):
    tree = _tree(LAUNCH / launch_file)
    imports = [n for n in tree.body if isinstance(n, ast.Import) and any(a.name == "vtrack_launch_common" for a in n.names)]
    assert imports, f"{launch_file} does not import vtrack_launch_common"
    # ... after putting its own folder (from __file__) first on sys.path
    inserts = [
        n for n in tree.body[: tree.body.index(imports[0])]
        for call in ast.walk(n)
        if isinstance(call, ast.Call) and _call_name(call) == "insert"
        and ast.unparse(call.func) == "sys.path.insert"
    ]
    assert inserts, f"{launch_file} imports vtrack_launch_common without putting its folder on sys.path first"
    here = [n for n in tree.body[: tree.body.index(imports[0])] if "__file__" in ast.unparse(n)]
    assert here, f"{launch_file}: the folder put on sys.path must come from __file__ (launch runs it from share/)"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_file_arguments_come_from_the_shared_module(launch_file):
    declared, used = _declared_and_used(LAUNCH / launch_file)
    shared = _shared_arguments()
    assert len(declared) == len(set(declared)), f"{launch_file} declares an argument twice: {declared}"
    assert set(declared) == EXPECTED[launch_file]
    assert set(declared) <= shared, f"not in vtrack_launch_common.ARGUMENTS: {set(declared) - shared}"
    if launch_file == "tracker.launch.py":
        used |= _shared_tuple("OVERRIDABLE")  # read in a loop over common.OVERRIDABLE
    assert used == set(declared), (
        f"{launch_file}: used but not declared {used - set(declared)}, declared but unused {set(declared) - used}")


def test_both_launch_files_share_the_tracker_arguments():
    tracker, _ = _declared_and_used(LAUNCH / "tracker.launch.py")
    demo, _ = _declared_and_used(LAUNCH / "demo.launch.py")
    assert {"tracker", "device", "params_file"} <= set(tracker) & set(demo)
    assert _shared_tuple("OVERRIDABLE") <= set(tracker)
    assert _shared_arguments() == set(tracker) | set(demo), "an argument in ARGUMENTS that no launch file declares"


# --- executed against stand-ins for launch / launch_ros ---------------------------------------


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


@pytest.fixture
def fake_launch(monkeypatch, tmp_path):
    """`launch`, `launch_ros` and the ament index as recording stand-ins; share/ in tmp_path."""
    share = tmp_path / "share" / "vtrack_ros"
    (share / "config").mkdir(parents=True)
    (share / "config" / "tracker.yaml").write_text("/**:\n  ros__parameters: {}\n")
    classes = {
        "launch": {"LaunchDescription": type("LaunchDescription", (_Recorded,), {})},
        "launch.actions": {n: type(n, (_Recorded,), {}) for n in (
            "DeclareLaunchArgument", "OpaqueFunction", "IncludeLaunchDescription", "TimerAction")},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch.launch_description_sources": {"PythonLaunchDescriptionSource": type("Source", (_Recorded,), {})},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (_Recorded,), {}),
                               "LifecycleNode": type("LifecycleNode", (_Recorded,), {})},
        "launch_ros.parameter_descriptions": {"ParameterValue": type("ParameterValue", (_Recorded,), {})},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda package: str(share)},
    }
    for name, attributes in classes.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "vtrack_launch_common", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the launch files insert their folder
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no launch/__pycache__ in the tree
    return share


def _load(path: Path):
    """As launch's python_launch_file_utilities does: a module from the file, __file__ set."""
    loader = importlib.machinery.SourceFileLoader("python_launch_file", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def _entities(launch_file: str):
    return _load(LAUNCH / launch_file).generate_launch_description().args[0]


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_file_declares_the_shared_definitions(fake_launch, launch_file):
    common = _load(COMMON)
    declared = [e for e in _entities(launch_file) if type(e).__name__ == "DeclareLaunchArgument"]
    assert {d.args[0] for d in declared} == EXPECTED[launch_file]
    for action in declared:
        default, description = common.ARGUMENTS[action.args[0]]
        if action.args[0] == "params_file":
            default = str(fake_launch / "config" / "tracker.yaml")
        assert action.kwargs == {"default_value": default, "description": description}


def test_tracker_node_gets_params_file_overrides_remap_and_namespace(fake_launch):
    (opaque,) = [e for e in _entities("tracker.launch.py") if type(e).__name__ == "OpaqueFunction"]
    build = opaque.kwargs["function"]
    params_file = str(fake_launch / "config" / "tracker.yaml")

    def launch_with(**values):
        arguments = {"tracker": "", "device": "", "image": "/camera/image_raw", "params_file": params_file,
                     "namespace": "", "lifecycle": "false"}
        context = types.SimpleNamespace(launch_configurations={**arguments, **values})
        (node,) = build(context)
        assert type(node).__name__ == ("LifecycleNode" if values.get("lifecycle", "").strip().lower() == "true"
                                       else "Node")
        return node.kwargs

    node = launch_with()
    assert node["parameters"] == [params_file]  # empty tracker/device: the file's values stand
    assert node["namespace"] is None and node["executable"] == "tracker_node"
    node = launch_with(tracker="kcf", device=" 0 ", image="/cam/left", namespace="lt")
    assert node["parameters"][0] == params_file
    overrides = node["parameters"][1]
    assert {k: (v.args[0], v.kwargs["value_type"]) for k, v in overrides.items()} == {
        "tracker": ("kcf", str), "device": ("0", str)}
    assert node["remappings"] == [("image", "/cam/left"), ("image/compressed", "/cam/left/compressed")]
    assert node["namespace"] == "lt"
    assert launch_with(params_file="")["parameters"] == []
    # lifecycle:=true: a LifecycleNode (namespace passed as the keyword it requires), the node's
    # lifecycle parameter set last, so the params file cannot turn it off
    managed = launch_with(lifecycle=" True ", tracker="kcf")
    assert "namespace" in managed and managed["namespace"] is None
    assert managed["parameters"][0] == params_file and managed["parameters"][-1] == {"lifecycle": True}
    assert managed["remappings"] == [("image", "/camera/image_raw"), ("image/compressed", "/camera/image_raw/compressed")]
    assert launch_with(lifecycle="false")["parameters"] == [params_file]  # plain: no lifecycle parameter passed
    with pytest.raises(RuntimeError, match="lifecycle must be true or false"):
        launch_with(lifecycle="yes")
    with pytest.raises(RuntimeError, match="does not exist"):
        launch_with(params_file=str(fake_launch / "missing.yaml"))


def test_demo_includes_the_tracker_launch_file_beside_it(fake_launch):
    entities = _entities("demo.launch.py")
    (include,) = [e for e in entities if type(e).__name__ == "IncludeLaunchDescription"]
    assert include.args[0].args[0] == str(LAUNCH / "tracker.launch.py")
    passed = dict(include.kwargs["launch_arguments"])
    assert {k: getattr(v, "args", (v,))[0] for k, v in passed.items()} == {
        "tracker": "tracker", "device": "device", "params_file": "params_file", "image": "/camera/image_raw"}
