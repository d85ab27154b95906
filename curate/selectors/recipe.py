"""Selection plans: steps that narrow the pool (SQL filters, dedup, selectors) and a
final selector whose ranking becomes the selection. A single `curate select METHOD` is
a one-step plan; a YAML recipe (top-level `selectors/` folder) is a longer one:

    description: diverse, good-quality instructions
    where: "kind = 'instruction'"          # optional: the starting pool
    budget: 5%                             # default for the final step; --budget wins
    steps:
      - filter: "response_tokens >= 8"     # SQL over pairs + score columns
      - dedup: exact-dedup                 # a method name, or {method: ..., options}
      - dedup: {method: semdedup, threshold: 0.95, keep: "-ppl"}
      - decontaminate: {against: gsm8k_test.jsonl}   # a deduplicator by name: a dedup step
      - select: {method: facility-location, quality: ifd}

Every step is checked (method names, options, budget) before any work; mistakes name
the recipe's line. A recipe is named by its path or, for the packaged ones (the
`selectors/` folder, shipped inside the package), by its bare name: `dedup`,
`dedup.yaml` and `selectors/dedup.yaml` are the same recipe from any directory
(`resolve_recipe`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector
from curate.selectors.pool import Pool

STEP_KINDS = ("filter", "dedup", "select")
TOP_KEYS = ("description", "where", "budget", "embed", "steps")


@dataclass
class Step:
    kind: str  # filter | dedup | select
    method: str | None = None  # for dedup / select
    params: dict = field(default_factory=dict)
    sql: str | None = None  # for filter
    line: int | None = None  # in the recipe, for messages
    selector: Selector | None = None  # an estimator to fit instead of make_selector(method)

    def describe(self) -> dict:
        if self.kind == "filter":
            return {"filter": self.sql}
        return {self.kind: {"method": self.method, **{k: str(v) if isinstance(v, Budget)
                                                      else v for k, v in self.params.items()}}}


@dataclass
class Plan:
    steps: list[Step]
    where: str | None = None
    embed: str | None = None
    text: str | None = None  # the recipe, when the plan came from one
    source: str | None = None  # its path

    @property
    def method(self) -> str:
        last = self.steps[-1]
        return "recipe" if self.text is not None else (last.method or last.kind)


def _where(step: Step, source: str | None) -> str:
    where = f"{source} line {step.line}" if source and step.line else (source or "")
    return f"{where}: " if where else ""


def validate(plan: Plan) -> Plan:
    """Build every selector once (checks names and options) before any work."""
    from curate.selectors import make_selector

    if not plan.steps:
        raise CurateError(f"{plan.source or 'the plan'}: no steps\n  fix: add at least one "
                          "`select:` step")
    if plan.steps[-1].kind == "filter":
        raise CurateError(f"{_where(plan.steps[-1], plan.source)}the last step is a filter\n"
                          "  fix: end with a select (or dedup) step")
    for k, step in enumerate(plan.steps):
        try:
            if step.kind == "filter":
                if not isinstance(step.sql, str) or not step.sql.strip():
                    raise CurateError("a filter step needs a SQL condition\n  fix: e.g. "
                                      "- filter: \"response_tokens >= 8\"")
                continue
            selector = make_selector(step.method, **step.params)
            if step.kind == "dedup" and not getattr(selector, "deduplicates", False):
                from curate.selectors import SELECTORS

                dedups = [n for n, c in SELECTORS.items() if getattr(c, "deduplicates", False)]
                raise CurateError(f"{step.method!r} is not a deduplicator\n  fix: use one of "
                                  f"{', '.join(dedups)} in a dedup step, or a select step")
            if k == len(plan.steps) - 1 and selector.budget_required and \
                    getattr(selector, "budget", None) is None:
                raise CurateError(f"{step.method} needs a budget\n  fix: pass --budget "
                                  "(1000, 5%, \"2M tokens\") or set one in the recipe")
            if "budget" in step.params and step.params["budget"] is not None:
                Budget.parse(step.params["budget"])
        except CurateError as e:
            raise CurateError(_where(step, plan.source) + str(e)) from None
    return plan


RECIPE_SUFFIXES = (".yaml", ".yml")


def recipes_folder() -> Path | None:
    """Where the packaged recipes are: `curate/recipes/` in an installed curate (the
    top-level `selectors/` folder, shipped there by pyproject.toml's package-dir), else
    the `selectors/` folder of the clone curate runs from (an editable install too)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "recipes"
    if installed.is_dir():
        return installed
    clone = package.parent
    if (clone / "pyproject.toml").is_file() and (clone / "selectors").is_dir():
        return clone / "selectors"
    return None


def packaged_recipes() -> dict[str, Path]:
    """The packaged recipes by bare name (`dedup` for selectors/dedup.yaml)."""
    folder = recipes_folder()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.suffix in RECIPE_SUFFIXES and p.is_file()}


def resolve_recipe(recipe: str | Path) -> Path:
    """The recipe file that `recipe` names: an existing path as given (relative to the
    working directory) wins; else a packaged recipe, named bare (`dedup`, `dedup.yaml`)
    or as the project writes it (`selectors/dedup.yaml`), found the same from a clone
    and from an installed curate. A name that matches nothing fails listing the
    packaged recipes."""
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    parts = path.parts
    bare = not path.is_absolute() and (len(parts) == 1 or
                                       (len(parts) == 2 and parts[0] == "selectors"))
    stem = path.stem if path.suffix in RECIPE_SUFFIXES else path.name
    packaged = packaged_recipes()
    if bare and stem in packaged:
        return packaged[stem]
    have = ", ".join(packaged) or "none found"
    raise CurateError(f"no recipe file {recipe}\n  fix: give a path to a YAML recipe, or "
                      f"the name of a packaged one: {have}")


def load_recipe(path: str | Path, budget: str | None = None) -> Plan:
    """Parse and check a YAML recipe (a path or a packaged recipe's name, as
    `resolve_recipe` finds it); `budget` overrides the recipe's."""
    import yaml

    path = resolve_recipe(path)
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: nothing constructed
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise CurateError(f"{path}{at}: not valid YAML: {getattr(e, 'problem', e)}\n"
                          "  fix: check the indentation and quoting there") from None
    if not isinstance(root, yaml.MappingNode):
        raise CurateError(f"{path}: a recipe is a mapping with a `steps:` list\n  fix: see "
                          "selectors/README.md for the format")
    top = {}
    for key_node, value_node in root.value:
        key = key_node.value
        if key not in TOP_KEYS:
            raise CurateError(f"{path} line {key_node.start_mark.line + 1}: unknown key "
                              f"{key!r}\n  fix: use {', '.join(TOP_KEYS)}")
        top[key] = value_node
    data = safe_yaml(text, path)
    steps_node = top.get("steps")
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        line = steps_node.start_mark.line + 1 if steps_node is not None else 1
        raise CurateError(f"{path} line {line}: `steps:` must be a non-empty list\n  fix: "
                          "e.g. steps:\n    - select: {method: random}")
    steps = []
    for node, value in zip(steps_node.value, data["steps"]):
        line = node.start_mark.line + 1
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _dedups():
            method, body = next(iter(value.items()))  # `- decontaminate: {against: ..}`
            if body is not None and not isinstance(body, dict):
                raise CurateError(f"{path} line {line}: the options of a {method} step are a "
                                  f"mapping\n  fix: e.g. - {method}: {{}}")
            value = {"dedup": {**(body or {}), "method": method}}
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in STEP_KINDS:
            raise CurateError(f"{path} line {line}: a step is one of "
                              f"{', '.join(k + ':' for k in STEP_KINDS)} or a deduplicator "
                              f"({', '.join(k + ':' for k in _dedups())})\n  fix: e.g. "
                              "- dedup: {method: semdedup, threshold: 0.95}")
        kind, body = next(iter(value.items()))
        if kind == "filter":
            steps.append(Step("filter", sql=body, line=line))
            continue
        if isinstance(body, str):
            body = {"method": body}
        if not isinstance(body, dict) or "method" not in body:
            raise CurateError(f"{path} line {line}: a {kind} step needs a method\n  fix: e.g. "
                              f"- {kind}: {{method: random}}")
        params = {k: _near(path, v) if k in PATH_PARAMS else v
                  for k, v in body.items() if k != "method"}
        steps.append(Step(kind, method=str(body["method"]), params=params, line=line))
    last = steps[-1]
    if budget is not None or data.get("budget") is not None:
        if budget is not None or "budget" not in last.params:
            last.params["budget"] = budget if budget is not None else data["budget"]
    plan = Plan(steps, where=data.get("where"), embed=data.get("embed"), text=text,
                source=str(path))
    return validate(plan)


PATH_PARAMS = ("against", "target")  # step options that name a file


def _near(recipe: Path, value):
    """A relative file path in a recipe step reads from the recipe's folder when the file is
    there, else from the working directory (a selection or store name is left as is)."""
    if isinstance(value, str) and value and not Path(value).is_absolute():
        beside = recipe.parent / value
        if beside.is_file():
            return str(beside.resolve())
    return value


def _dedups() -> list[str]:
    """The deduplicators' method names: each is also a step of its own in a recipe."""
    from curate.selectors import SELECTORS

    return [n for n, c in SELECTORS.items() if getattr(c, "deduplicates", False)]


def safe_yaml(text: str, path: str | Path):
    """YAML data by the safe loader only: a tag that would build a Python object
    (`!!python/object`, `!!python/name`, ...) is refused, never constructed."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        tag = re.search(r"tag '([^']+)'", str(e.problem))
        what = f"the tag {tag.group(1).replace('tag:yaml.org,2002:', '!!')}" if tag \
            else "a tag"
        raise CurateError(f"{path}{at}: {what} is not allowed: curate reads YAML with a "
                          "safe loader that builds no Python objects\n  fix: use plain "
                          "YAML (mappings, lists, strings, numbers)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise CurateError(f"{path}{at}: not valid YAML: {getattr(e, 'problem', e)}\n"
                          "  fix: check the indentation and quoting there") from None


@dataclass
class PlanResult:
    pool: Pool  # the pool the final step chose from
    selector: Selector  # the final step, fitted
    pool_size: int  # of the starting pool
    dropped: pa.Table | None  # id, duplicate_of, similarity, step
    log: list[dict]  # per step: what it was, rows in and out, seconds
    masks: pa.Table | None = None  # loss masks of the selected ids (MASK_SCHEMA)
    mask_model: str | None = None  # the tokenizer behind token masks


def run_plan(store, plan: Plan, progress=None) -> PlanResult:
    """Narrow the pool step by step; the last step's ranking is the selection. Masks a
    step sets follow the ids that later steps keep."""
    from curate.selectors import make_selector
    from curate.selection import merge_masks

    pool = Pool(store, plan.where, plan.embed)
    start_size = len(pool)
    dropped: list[pa.Table] = []
    log = []
    masks, mask_model = None, None
    for k, step in enumerate(plan.steps):
        label = f"{k + 1}:{step.kind}:{step.method or 'sql'}"
        if progress:
            progress(label, len(pool))
        started = time.time()
        before = len(pool)
        try:
            if step.kind == "filter":
                keep = pool.values(f"({step.sql})::BOOLEAN", "filter") == 1.0
                pool = pool.subset(keep)
            else:
                selector = (step.selector or make_selector(step.method, **step.params)).fit(pool)
                if getattr(selector, "dropped_", None) is not None and selector.dropped_.num_rows:
                    d = selector.dropped_
                    dropped.append(d.append_column("step", pa.array([label] * d.num_rows)))
                masks = merge_masks(masks, getattr(selector, "masks_", None))
                mask_model = getattr(selector, "mask_model_", None) or mask_model
                if k < len(plan.steps) - 1:
                    keep = np.zeros(len(pool), bool)
                    keep[selector.ranking_] = True
                    pool = pool.subset(keep)
        except CurateError as e:
            raise CurateError(_where(step, plan.source) + str(e)) from None
        log.append({**step.describe(), "rows_in": before,
                    "rows_out": len(pool) if k < len(plan.steps) - 1
                    else len(selector.ranking_), "seconds": round(time.time() - started, 3)})
    if masks is not None:
        import pyarrow.compute as pc

        masks = masks.filter(pc.is_in(masks["id"], pa.array(selector.selected_ids_, pa.string())))
    return PlanResult(pool, selector, start_size,
                      pa.concat_tables(dropped) if dropped else None, log,
                      masks if masks is not None and masks.num_rows else None, mask_model)
