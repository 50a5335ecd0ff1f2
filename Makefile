# The README's two commands. Both set everything up first (scripts/setup.sh is idempotent: a second run takes
# well under a second).
.PHONY: setup demo test

DEMO_TEXT = The lighthouse keeper wrote in his log every evening. That autumn the storm came from the west, and the fishing boats stayed in the harbour until the wind turned. On the third day the sea was calm again, the gulls came back to the rocks, and the first boat went out at dawn with the keeper's youngest son at the helm.

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/attnsparse compare --text "$(DEMO_TEXT)" --mask sink_window --sparsity 0.5

test: setup
	npm test --silent
	.venv/bin/python -m pytest
