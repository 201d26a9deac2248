"""The code's structure: no import cycle anywhere in the four packages, module to module (imports
inside functions included), and the checker itself finds one added on purpose."""
from __future__ import annotations

import grimp

PACKAGES = ("cluster", "jobs", "workers", "seg_models")


def import_graph():
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def cycles(graph) -> list[list[str]]:
    """Every set of modules that import each other in a circle (Tarjan's strongly connected
    components with more than one module, or a module importing itself)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(module: str) -> None:  # recursive: import chains are far shorter than Python's limit
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph.find_modules_directly_imported_by(module):
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert len(graph.modules) > 100
    assert cycles(graph) == []


def test_a_cycle_added_on_purpose_is_found():
    graph = import_graph()
    assert graph.direct_import_exists(importer="jobs.spec", imported="workers.target")
    graph.add_import(importer="workers.target", imported="jobs.spec")  # the wrong way round
    assert any({"workers.target", "jobs.spec"} <= set(cycle) for cycle in cycles(graph))
