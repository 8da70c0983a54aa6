"""The package boundaries of docs/architecture.md, read from the import statements
(module level and inside functions): ``planners`` never imports ``envs`` or
``jepa_robot``; ``envs`` never imports ``jepa_robot`` or ``planners``; and no module of
the three imports itself back through others. Inside ``jepa_robot``, the model's pieces
never import the commands built on them (:data:`INSIDE_NEVER`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planners", "envs", "jepa_robot")
NEVER = {"planners": {"envs", "jepa_robot"}, "envs": {"jepa_robot", "planners"}, "jepa_robot": set()}
COMMANDS = {"jepa_robot.cli", "jepa_robot.evaluation", "jepa_robot.robot", "jepa_robot.training"}
INSIDE_NEVER = {
    "jepa_robot.world_model": COMMANDS | {"jepa_robot.agent", "jepa_robot.config"},
    "jepa_robot.data": COMMANDS | {"jepa_robot.agent", "jepa_robot.world_model"},
    "jepa_robot.agent": COMMANDS,
    "jepa_robot.files": COMMANDS | {"jepa_robot.agent", "jepa_robot.world_model", "jepa_robot.data"},
}


def import_graph() -> dict[str, set[str]]:
    """Module name -> the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module)
                elif isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
            graph[name] = {m for m in imported if m.split(".")[0] in PACKAGES}
    return graph


def test_the_import_graph_has_the_modules():
    graph = import_graph()
    assert {"planners.cem", "envs.metaworld.env", "envs.ros.safety", "jepa_robot.agent"} <= set(graph)


def test_packages_keep_their_boundaries():
    broken = [(module, target) for module, targets in import_graph().items() for target in targets
              if target.split(".")[0] in NEVER[module.split(".")[0]]]
    assert broken == []


def test_the_model_never_imports_the_commands_built_on_it():
    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    broken = [(module, target) for module, targets in import_graph().items() for target in targets
              if part(target) in INSIDE_NEVER.get(part(module), set())]
    assert broken == []
    assert not any("jepa_robot.cli" in targets for targets in import_graph().values())


def test_no_import_cycle():
    graph = import_graph()
    known = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(known[module]):
            # importing a package runs its __init__, not its submodules: only edges between
            # modules count, and a package's own submodules importing it is not a cycle
            if module.startswith(target + "."):
                continue
            if state.get(target) == "open":
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(known):
        if module not in state:
            visit(module, [module])
    assert cycles == []


# --- start-up: what composing a config imports

HEAVY = ("torch", "lerobot", "mujoco", "metaworld", "transformers")
"""Libraries that take seconds to import: a command imports them when its work needs them.
(Gymnasium, ~0.6 s, is imported by ``import envs``, which registers the tasks.)"""

REQUIRED_OVERRIDES = {
    "eval": ["checkpoint=default"], "plan": ["checkpoint=default"], "set-planning": ["checkpoint=default"],
    "run-robot": ["checkpoint=default"], "import-vjepa2-ac": ["checkpoint=vjepa2-ac-vitg.pt"],
    "fit-readout": ["checkpoint=default", "dataset=data/a"], "inspect": ["dataset=data/a"],
    "merge": ["datasets=[data/a,data/b]", "root=data/ab"], "pretrain-encoder": ["datasets=[data/a]"],
    "train": ["dataset=data/a"],
}
"""The ``???`` keys of each command's config, given."""


def imported_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; return what it printed as JSON (its last line)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_composing_and_checking_every_config_imports_no_heavy_library():
    composed = imported_after(f"""
import json, sys
from jepa_robot.cli import COMMANDS
from jepa_robot.config import compose
required = {REQUIRED_OVERRIDES!r}
names = [name for name, command in COMMANDS.items() if compose(name, required.get(name, []), command.schema())]
print(json.dumps({{"names": names, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
""")
    from jepa_robot.cli import COMMANDS

    assert composed == {"names": list(COMMANDS), "heavy": []}


def test_help_and_a_bad_override_import_no_heavy_library():
    result = imported_after(f"""
import contextlib, io, json, sys
from jepa_robot.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    codes = [main(["--help"]), main(["collect", "--cfg"]), main(["eval", "checkpoint=default", "planner.name=nope"])]
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
""")
    assert result == {"codes": [0, 0, 2], "heavy": []}


def test_importing_envs_registers_the_tasks_and_makes_egl_the_default_renderer():
    result = imported_after("""
import json, os, sys
os.environ.pop("MUJOCO_GL", None)
import envs, gymnasium
print(json.dumps({"registered": sorted(set(envs.ENV_IDS.values()) & set(gymnasium.registry)),
                  "gl": os.environ.get("MUJOCO_GL")}))
""")
    import envs

    assert result == {"registered": sorted(envs.ENV_IDS.values()), "gl": "egl"}
