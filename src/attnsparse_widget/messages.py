"""Every sentence the library shows a user about a result, in one place: the caveat, the sparsity label, notes.

(Error messages stay next to the check that raises them; the sample texts are in :mod:`attnsparse_widget.texts`.)
"""

from __future__ import annotations

from typing import Any

CAVEAT = (
    "A post-hoc mask on a model trained with dense attention shows degradation, not how a model trained with "
    "sparse attention (NSA, DSA) behaves. MLA compresses the KV cache and drops no pairs."
)

NOTE_NO_REPLAY = "per-layer curves computed without replay (block list not found): L full passes"
NOTE_ONE_TOKEN = "a one-token text has no next token to score: perplexity is undefined (nan)"


def percent(value: float | None, digits: int = 1) -> str:
    """``0.5`` -> ``"50.0%"``; None (nothing requested) -> ``"–"``."""
    return "–" if value is None else f"{value:.{digits}%}"


def requested_achieved(requested: float | None, achieved: float) -> str:
    """The sparsity label used everywhere: ``"requested 50.0%, achieved 49.8%"``."""
    return f"requested {percent(requested)}, achieved {percent(achieved)}"


def truncation_note(full_length: int, n_tokens: int, max_tokens: int | None) -> str:
    return f"the text is {full_length} tokens; the first {n_tokens} are analysed (max_tokens={max_tokens})"


def adapted_elsewhere_note(trained_mask: str, trained_sparsity: float, mask: str, sparsity: float | None) -> str:
    return (
        f"the adapters were trained under {trained_mask} at {percent(trained_sparsity, 0)} and are evaluated under "
        f"{mask} at {percent(sparsity, 0)}"
    )


def curve_skipped_note(n_tokens: int, limit: int) -> str:
    return (
        f"the per-layer curve is not computed by itself for texts over {limit} tokens (this one is {n_tokens}): it "
        f"replays about two forward passes per layer; tick 'compute the per-layer curve' to run it"
    )


def below_dense_note(delta_nll: float, noise: float, n_scored: int) -> str:
    """Said when a mask lowers the perplexity, which looks like a bug and is not one: ``noise`` is two standard
    errors of the per-token NLL differences (:func:`attnsparse_widget.metrics.paired_standard_error`)."""
    measured = f"ΔNLL {delta_nll:+.3f} ± {noise:.3f} nats over {n_scored} scored tokens"
    if -delta_nll <= noise:
        return (
            f"the mask lowers perplexity, but within this text's noise ({measured}): on one short text a few tokens "
            f"decide the mean; compare several texts (aw.sweep(model, aw.sample_texts(), ...)) before reading an "
            f"effect into it"
        )
    return (
        f"the mask lowers perplexity beyond this text's noise ({measured}): some heads attend to tokens that mislead "
        f"the next-token prediction here, and dropping them helps on this text; it need not on another"
    )


def paper_note(mask: Any, achieved: float) -> str:
    """What ``sparsity='paper'`` ran: the mask at its paper's parameters, and the sparsity that gave."""
    return f"sparsity='paper': {mask!r} as its paper ships it, {achieved:.4f} of the allowed pairs dropped"
