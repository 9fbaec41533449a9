"""Loading and validating prompt template sets."""

from __future__ import annotations

import functools
import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..models.errors import InvalidInput, NotFound

SETS_DIR = Path(__file__).parent / "sets"
DEFAULT_SET = "imagenet-simple"
MAX_TEMPLATE_CHARS = 300
MAX_TEMPLATES = 100


class TemplateError(InvalidInput):
    """A template or template set that zest refuses to use."""


def validate_template(template: object) -> str:
    """Return `template` if it is a safe single-placeholder format string, else raise `TemplateError`.

    Safe means: a non-empty string of at most MAX_TEMPLATE_CHARS characters whose only
    replacement field is one bare `{}` (no index, name, attribute, item, conversion or format
    spec, so `{0.__class__}`, `{x[0]}`, `{!r}` and `{:>10}` are all refused). Literal braces are
    written doubled, `{{` and `}}`, as in `str.format`.
    """
    if not isinstance(template, str):
        raise TemplateError(f"template must be a string, got {type(template).__name__}")
    if not template.strip():
        raise TemplateError("template is empty")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template is {len(template)} characters long; the limit is {MAX_TEMPLATE_CHARS}")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise TemplateError(f"template {template!r} is malformed: {exc} (write literal braces as {{{{ and }}}})")
    if not fields:
        raise TemplateError(f"template {template!r} has no {{}} placeholder for the class name")
    if len(fields) > 1:
        raise TemplateError(f"template {template!r} has {len(fields)} placeholders; exactly one {{}} is allowed")
    name, spec, conv = fields[0]
    if name != "" or spec or conv:
        raise TemplateError(
            f"template {template!r}: the placeholder must be a bare {{}} (no field name, index, attribute, "
            "conversion or format spec)"
        )
    return template


@dataclass(frozen=True)
class TemplateSet:
    name: str
    description: str
    templates: tuple[str, ...]

    @property
    def digest(self) -> str:
        """Content hash of the templates (cache keys use it, not the name)."""
        return hashlib.sha256(json.dumps(self.templates).encode()).hexdigest()[:16]

    def render(self, label: str) -> list[str]:
        return [t.format(label) for t in self.templates]


def _validated(name: str, description: str, templates: object) -> TemplateSet:
    if not isinstance(templates, (list, tuple)) or not templates:
        raise TemplateError(f"template set {name!r}: templates must be a non-empty list")
    if len(templates) > MAX_TEMPLATES:
        raise TemplateError(f"template set {name!r} has {len(templates)} templates; the limit is {MAX_TEMPLATES}")
    checked = tuple(validate_template(t) for t in templates)
    if len(set(checked)) != len(checked):
        raise TemplateError(f"template set {name!r} repeats a template")
    return TemplateSet(name=name, description=description, templates=checked)


def load_file(path: Path) -> TemplateSet:
    """Load and validate one template-set file."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path.name}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or not {"name", "templates"} <= doc.keys():
        raise TemplateError(f"{path.name}: a template set needs 'name' and 'templates'")
    return _validated(str(doc["name"]), str(doc.get("description", "")), doc["templates"])


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, TemplateSet]:
    sets = [load_file(p) for p in sorted(SETS_DIR.glob("*.yaml"))]
    return {s.name: s for s in sets}


def list_template_sets() -> list[TemplateSet]:
    """The shipped template sets, sorted by name."""
    return sorted(_shipped().values(), key=lambda s: s.name)


def load_template_set(name: str) -> TemplateSet:
    try:
        return _shipped()[name]
    except KeyError:
        known = ", ".join(sorted(_shipped()))
        raise NotFound(f"unknown template set {name!r}; known sets: {known}") from None


def user_template_set(templates: object) -> TemplateSet:
    """A template set sent with a request, validated exactly like the shipped ones."""
    return _validated("custom", "templates sent with the request", templates)
