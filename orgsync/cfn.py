"""CloudFormation templates (domain.templates' plain dicts) as the YAML that `orgsync roles template` prints
and the console offers for download."""

from __future__ import annotations

from typing import Any


def render(template: dict[str, Any], comments: list[str]) -> str:
    """The template as YAML after `comments` (as # lines); a multi-line string (a nested template) as a
    literal block."""
    import yaml

    dumper: Any = type("TemplateDumper", (yaml.SafeDumper,), {})  # its own representers, not SafeDumper's

    def string(representer: Any, value: str) -> Any:
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    dumper.add_representer(str, string)
    text = str(yaml.dump(template, Dumper=dumper, sort_keys=False, width=120, allow_unicode=True))
    return "".join(f"# {line}\n" for line in comments) + text
