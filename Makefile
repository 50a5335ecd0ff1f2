# The README's two commands. Both set everything up first (scripts/setup.sh is idempotent).
.PHONY: setup demo test

DEMO_TEXT = The lighthouse keeper wrote in his log every evening. The storm came from the west, and the ships stayed in the harbour until the wind turned. On the third day the sea was calm again, and the first boat went out at dawn with the keeper's son at the helm.

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/attnsparse compare --text "$(DEMO_TEXT)" --mask sink_window --sparsity 0.5

test: setup
	.venv/bin/python -m pytest
