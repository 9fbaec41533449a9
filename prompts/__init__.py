"""Prompt template sets: named lists of templates with exactly one `{}` placeholder.

Shipped sets are YAML files in `prompts/sets/`, one set per file. The same validator checks
shipped templates and the templates a user sends with a request, so user text can never reach
`str.format` with anything but the one positional placeholder.
"""

from .templates import (
    DEFAULT_SET,
    TemplateError,
    TemplateSet,
    list_template_sets,
    load_template_set,
    user_template_set,
    validate_template,
)

__all__ = [
    "DEFAULT_SET",
    "TemplateError",
    "TemplateSet",
    "list_template_sets",
    "load_template_set",
    "user_template_set",
    "validate_template",
]
