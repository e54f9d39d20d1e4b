"""The import rules of docs/architecture.md, read from the source of every module (lazy imports inside
functions included), so that they stay true:

- `mesu_web/` (settings, the Celery app, the job library, notifications) imports no app;
- no app imports another app's `services`, `tasks` or `views` (it goes through a public module, such as
  `brands.matching` for the writer), and no code imports another module's `_private` name;
- no import cycle spans two apps;
- every edge from one app to another is listed below with why: a new one fails this test until it is.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("mesu_web", "writer", "brands", "training")
FEATURE_APPS = ("writer", "brands", "training")
NOT_ACROSS = ("services", "tasks", "views")  # another app's writes, queue and pages stay its own

# (importing app, imported module) -> why the edge is there. Exactly these, no more, no fewer.
ALLOWED_EDGES = {
    ("training", "writer.models"): "the leaderboard's human preference rate reads readers' ratings and choices",
    # brands reads the writer's rows and roles, and writes its briefs in the writer's answer format.
    ("brands", "writer.models"): "options carry brand placements; matching reads stories and chapters",
    ("brands", "writer.roles"): "who is a brand manager",
    ("brands", "writer.selectors"): "the review page shows the option's request",
    ("brands", "writer.prompting"): "the brief names the answer tags",
    ("brands", "writer.parsing"): "an added sentence ends where the writer's chapters do",
    ("brands", "writer.quality"): "a placed chapter's ROUGE-L against its draft, measured as the rewards do",
    # The writer reaches brands through its public module only.
    ("writer", "brands.matching"): "matching, option plans, placement views",
    ("writer", "brands.demo"): "the demo data seeds the demo brands",
    # Issue 17: brands as a business.
    ("writer", "brands.models"): "a partner's request names its partner and brand (type hints only)",
    ("writer", "brands.review"): "policy findings and auto-approve rules run when a request's options are stored",
    ("writer", "brands.measurement"): "the chapter and request pages' disclosure panel and the under-18 rule",
    ("writer", "brands.suitability"): "the sign-up's age question",
    ("brands", "writer.partner_requests"): "the partner API asks for a reader's branded chapter",
    ("writer", "training.selectors"): "the active adapter for a new request",
    # Training builds prompts, parses answers and calls the writer's engines, as serving does.
    ("training", "writer.prompting"): "training prompts are the served prompts",
    ("training", "writer.parsing"): "the format reward and evaluation parse answers as serving does",
    ("training", "writer.engines"): "distillation and evaluation generate through the writer's engines",
    ("training", "writer.engines.base"): "sampling settings and the engine protocol",
    ("training", "writer.model_files"): "the packaged base model",
    ("training", "writer.book_import"): "the one book reader",
    ("training", "writer.text_input"): "decoding uploaded text",
    ("training", "writer.quality"): "the repetition reward measures loops as the options do",
    ("training", "brands.placements"): "the placement reward finds mentions as the review page does",
    ("training", "brands.embedder"): "the embedding reward uses the packaged MiniLM",
}


def _layer(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in LAYERS else None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def source_modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def imports_of(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import in the file: name is what `from module import name` takes (None for
    `import module`); `from package import submodule` gives the submodule as the module."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub, None) if _is_module(sub) else (node.module, alias.name))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    graph = {}
    for name, path in source_modules().items():
        graph[name] = {module for module, _ in imports_of(path) if _layer(module)}
    return graph


def test_mesu_web_imports_no_app():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if _layer(module) == "mesu_web"
        for target in targets
        if _layer(target) in FEATURE_APPS
    )
    assert not wrong, "mesu_web/ must import no app; register from the app's AppConfig.ready() instead:\n" + "\n".join(wrong)


def test_no_app_imports_another_apps_services_tasks_or_views():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _layer(target) in FEATURE_APPS
        and _layer(target) != _layer(module)
        and target.split(".")[-1] in NOT_ACROSS
    )
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    wrong = sorted(
        f"{module} imports {name} from {source}"
        for module, path in source_modules().items()
        for source, name in imports_of(path)
        if name and name.startswith("_") and not name.startswith("__") and source != module
    )
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_spans_two_apps():
    across = [sorted(c) for c in _cycles(import_graph()) if len({_layer(m) for m in c}) > 1]
    assert not across, f"import cycles across apps: {across}"


def test_the_cycle_finder_finds_a_cycle_across_apps():
    graph = {"writer.services": {"brands.services"}, "brands.services": {"writer.services"}, "writer.models": set()}
    assert _cycles(graph) == [{"writer.services", "brands.services"}]


def test_every_edge_between_apps_is_listed():
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, targets in import_graph().items():
        for target in targets:
            source_app, target_app = _layer(module), _layer(target)
            if source_app in FEATURE_APPS and target_app in FEATURE_APPS and source_app != target_app:
                edges[(source_app, target)].append(module)
    new = {edge: sorted(users) for edge, users in edges.items() if edge not in ALLOWED_EDGES}
    gone = sorted(set(ALLOWED_EDGES) - set(edges))
    assert not new, (
        f"new import edges between apps: {new}. Go through the other app's public module, or add the edge "
        "to ALLOWED_EDGES with its reason (and to docs/architecture.md)."
    )
    assert not gone, f"edges no module uses any more; remove them from ALLOWED_EDGES: {gone}"
