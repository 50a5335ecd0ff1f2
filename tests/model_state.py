"""What "the user's model comes out unchanged" means, as a snapshot to compare: its outputs bit for bit, its
attention implementation on every config, train/eval modes, hooks and instance-level forward overrides, plus the
process-wide state the engine touches (transformers' attention registries, the active capture plan)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from attnsparse_widget import capture


def registries() -> dict[str, dict[str, Any]]:
    """transformers' global attention and mask-function registries, without our own entry."""
    return {
        name: {k: v for k, v in registry._global_mapping.items() if k != capture.ATTN_NAME}
        for name, registry in (("attention", ALL_ATTENTION_FUNCTIONS), ("mask", ALL_MASK_ATTENTION_FUNCTIONS))
    }


def snapshot(model: PreTrainedModel, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    training = [m.training for m in model.modules()]
    model.eval()  # dropout off for a deterministic comparison, then the user's modes back
    with torch.no_grad():
        logits = model(ids).logits.clone()
    for module, mode in zip(model.modules(), training, strict=True):
        module.training = mode
    configs = [m.config for m in model.modules() if isinstance(m, PreTrainedModel)]
    state = {
        "impl": [c.__dict__.get("_attn_implementation_internal") for c in configs],
        "training": training,
        "forward_overrides": [
            (name, m.__dict__["forward"]) for name, m in model.named_modules() if "forward" in m.__dict__
        ],
        "hooks": [
            (name, list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()))
            for name, m in model.named_modules()
        ],
        "registries": registries(),
        "active_plan": capture.plan.ACTIVE.get(),
    }
    return logits, state


def assert_unchanged(model: PreTrainedModel, ids: torch.Tensor, before: tuple[torch.Tensor, dict[str, Any]]) -> None:
    logits, state = snapshot(model, ids)
    assert torch.equal(logits, before[0])  # bit for bit
    for key, value in before[1].items():
        assert state[key] == value, key
