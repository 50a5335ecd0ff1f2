"""``python -m attnsparse_widget.masks`` prints MASKS.md."""

from . import reference_markdown

print(reference_markdown(), end="")
