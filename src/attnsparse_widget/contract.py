"""The kernel-browser contract: the shape of every trait :class:`~attnsparse_widget.widget.AttentionDiffWidget`
syncs to its frontend, and of the custom messages both sides send.

``js/contract.ts`` declares the same types, key for key, with the same optionality; ``tests/test_contract.py`` checks
both directions (and checks real payloads against these types). Change one side and the test says what the other
side lacks. The builders live in :mod:`attnsparse_widget.payload`.

Conventions (what travels as JSON, plus binary buffers):
    * a float that is not finite (NaN, inf) travels as None (JSON has neither); the frontend shows "n/a";
    * a 2-D array travels as a :class:`MatrixPayload` whose bytes anywidget sends as a binary buffer;
    * an output trait is ``{}`` (:class:`Empty`) until its first value; readers check for a key before using it;
    * keys that are sometimes absent are in a ``total=False`` part of their TypedDict (``key?:`` in TypeScript).

This module is the leaf every other one may import: it imports nothing from the package.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class Empty(TypedDict):
    """An output trait before its first value: ``{}``. ``info``, ``metrics``, ``view`` and ``gallery`` are empty until
    the first result; ``layer_chart`` also stays empty for a model without a next-token head (an encoder)."""


class MatrixPayload(TypedDict):
    """A 2-D numpy array as it travels: its bytes are sent as a binary websocket frame, never as JSON numbers.

    shape: ``[rows, cols]``.
    dtype: ``"f2"`` float16 (probabilities, NaN where blank) or ``"u1"`` uint8 (state codes, percentages, thumbnails).
    data: the array's bytes, row-major, little endian (``rows * cols * itemsize`` of them).
    """

    shape: list[int]
    dtype: Literal["f2", "u1"]
    data: bytes


class Figure(TypedDict):
    """A plotly figure as sent (:mod:`attnsparse_widget.figures`), every 2-D array in it a :class:`MatrixPayload`.

    data: the traces (plotly trace dicts: ``type``, ``name``, ``x``, ``y``, ``z``, ...).
    layout: the plotly layout dict.
    """

    data: list[dict[str, Any]]
    layout: dict[str, Any]


class Drop(TypedDict):
    """A dropped (or partly dropped) cell of the main view with dense weight: a pair the model relied on.

    q: query position (the cell's first query token).
    k: key position (the cell's first key token).
    w: the dense attention probability of the cell that the mask dropped.
    """

    q: int
    k: int
    w: float


class _NextTokensKeys(TypedDict):
    dense: list[tuple[str, float]]
    sparse: list[tuple[str, float]]


class NextTokens(_NextTokensKeys, total=False):
    """The top-5 next tokens after the view's ``position`` under each regime, most probable first.

    dense: ``[token, probability]`` pairs with dense attention.
    sparse: the same with the sparse mask.
    adapted: the same for the adapted model under the mask (a comparison with an adaptation).
    """

    adapted: list[tuple[str, float]]


class _ViewKeys(TypedDict):
    layer: int
    head: int
    masked: str
    region: list[int]
    factor: int
    figure: Figure
    mask_figure: Figure
    states: MatrixPayload
    kept_pct: MatrixPayload
    drops: list[Drop]


class View(_ViewKeys):
    """The ``view`` trait: the main view of one layer and head, and the mask preview (:func:`payload.view_payload`).

    layer: the layer shown.
    head: the head shown, -1 for the mean over heads.
    masked: the masked pass beside the dense one: "sparse" (the mask forced on the model) or "adapted".
    region: ``[q0, q1, k0, k1]``, half-open query and key ranges of the tokens shown.
    factor: tokens per cell and axis (1: full resolution; more when a long text is pooled).
    figure: the main figure, dense | sparse | sparse − dense heatmaps (one trace each, named by panel); the dense
        trace has no ``z``: its values travel in the ``dense_map`` trait, sent only when they change (a mask or
        sparsity change leaves them as they are).
    mask_figure: the keep-pattern figure (the Mask tab).
    states: uint8 code per cell (figures.NOT_ALLOWED 0, KEPT 1, PARTLY_KEPT 2, DROPPED 3), for the tooltip.
    kept_pct: uint8 percentage of each cell's allowed pairs the mask keeps, for the tooltip.
    drops: the heaviest dropped cells, heaviest first (at most 5).
    """


class NextTokenView(TypedDict):
    """The ``next_tokens`` trait (language models, once the next-token metrics are in): apart from the view, so
    that a click on a row, or the metrics arriving after the view, send only these.

    position: the query position, in [0, n_tokens).
    top: the top-5 next tokens after ``position`` under each regime.
    """

    position: int
    top: NextTokens


class DenseMap(TypedDict):
    """The ``dense_map`` trait: the values of the main view's dense panel (:func:`payload.view_payload`), apart from
    the view so that they go only when they change. The frontend puts ``z`` into the view's dense trace when
    ``layer``, ``head`` and ``region`` are the view's own.

    layer: the layer shown.
    head: the head shown, -1 for the mean over heads.
    region: ``[q0, q1, k0, k1]``, as the view's.
    z: the dense panel's cells (float16; NaN where no pair is allowed).
    """

    layer: int
    head: int
    region: list[int]
    z: MatrixPayload


class Gallery(TypedDict):
    """The ``gallery`` trait: every layer x head as a dense and a sparse thumbnail (:func:`payload.gallery_payload`).

    n_layers: rows of thumbnails.
    n_heads: thumbnails per row.
    cell: a thumbnail's side, in cells.
    dense: the dense thumbnails stitched into one uint8 image, ``[n_layers * cell, n_heads * cell]``; each head's
        dense and sparse pair is scaled to that head's peak (255).
    sparse: the masked pass's thumbnails (``masked``), stitched the same way.
    masked: the masked pass shown: "sparse" (post-hoc) or "adapted".
    kl: per head, layer-major: KL(masked ‖ dense) averaged over rows (None where not finite).
    mass_lost: per head, layer-major: 1 − attention mass recall (None where not finite).
    """

    n_layers: int
    n_heads: int
    cell: int
    dense: MatrixPayload
    sparse: MatrixPayload
    masked: str
    kl: list[float | None]
    mass_lost: list[float | None]


class Continuations(TypedDict, total=False):
    """The greedy continuations as text; a key appears once that regime's continuation is computed (``{}`` before,
    and always for an encoder).

    dense: the continuation with dense attention.
    sparse: the continuation with the sparse mask at every layer.
    adapted: the continuation of the adapted model under the mask (a comparison with an adaptation).
    """

    dense: str
    sparse: str
    adapted: str


class ContinuationTokens(TypedDict, total=False):
    """The continuations as decoded tokens (the frontend highlights the first divergence); ``{}`` until computed.

    dense: the dense continuation's tokens.
    sparse: the sparse continuation's tokens.
    adapted: the adapted continuation's tokens.
    """

    dense: list[str]
    sparse: list[str]
    adapted: list[str]


class MetricsPayload(TypedDict):
    """The ``metrics`` trait: :class:`~attnsparse_widget.metrics.Metrics` field for field (non-finite floats as None,
    at any depth), plus the continuations (:func:`payload.metrics_payload`). Per-layer lists have one value per layer,
    ``*_per_head`` are ``[layer][head]``; None where not computed (yet) or not applicable (an encoder).

    requested_sparsity: the sparsity asked for (None: the mask's own parameters decide).
    achieved_sparsity: fraction of the allowed query-key pairs the mask dropped, over all layers and heads.
    achieved_sparsity_per_head: the same per layer and head.
    mass_recall: per layer, the mean dense attention probability on the kept pairs.
    mass_recall_per_head: the same per layer and head.
    mass_recall_min: the smallest recall of any attention row.
    mass_recall_p5: the 5th percentile of the row recalls.
    kl: per layer, KL(sparse ‖ dense) of the attention rows, averaged over rows and heads.
    kl_per_head: the same per layer and head.
    output_relative_error: relative error of the final hidden states, sparse against dense.
    dense_ppl: perplexity of the text with dense attention.
    sparse_ppl: the same with the sparse mask at every layer.
    delta_ppl: sparse_ppl − dense_ppl.
    delta_nll: log sparse_ppl − log dense_ppl.
    delta_nll_se: the standard error of delta_nll over the scored tokens (a scale for one text's noise).
    next_token_kl: KL(dense ‖ sparse) of the next-token distribution, averaged over positions.
    top1_agreement: fraction of positions where both regimes predict the same next token.
    per_layer_delta_ppl: ΔPPL with the mask at layer l only (grows as the per-layer curve is computed).
    cumulative_delta_ppl: ΔPPL with the mask at layers 0..l (grows likewise).
    adapted_ppl: perplexity of the adapted model under the mask (None without an adaptation, or until computed).
    recovered: the fraction of the perplexity gap the adaptation won back, (sparse_ppl − adapted_ppl) /
        (sparse_ppl − dense_ppl).
    adapted_next_token_kl: KL(dense ‖ adapted) of the next-token distribution, averaged over positions.
    adapted_top1_agreement: fraction of positions where the dense and adapted passes predict the same token.
    adapted_achieved_sparsity: achieved sparsity of the adapted pass (differs for score-dependent masks).
    adapted_mass_recall: per layer, the dense attention probability on the adapted pass's kept pairs.
    adapted_mass_recall_per_head: the same per layer and head.
    adapted_kl: per layer, KL(adapted ‖ dense) of the attention rows, averaged over rows and heads.
    adapted_kl_per_head: the same per layer and head.
    attention_time_dense: measured seconds of one forward pass's attention over every layer, dense (causal SDPA);
        None unless asked for (``time_attention``).
    attention_time_sparse: the same under the sparse pass's keep-masks on a block-sparse kernel.
    attention_kernel: that kernel ("flex": FlexAttention; "sdpa": SDPA with the mask, where flex cannot compile).
    attention_tiles_skipped: the fraction of the allowed 128 x 128 tiles the sparse kernel skipped.
    notes: sentences to show with the result (truncation, approximations).
    continuations: the greedy continuations as text.
    continuation_tokens: the same as tokens.
    """

    requested_sparsity: float | None
    achieved_sparsity: float | None
    achieved_sparsity_per_head: list[list[float | None]]
    mass_recall: list[float | None] | None
    mass_recall_per_head: list[list[float | None]] | None
    mass_recall_min: float | None
    mass_recall_p5: float | None
    kl: list[float | None] | None
    kl_per_head: list[list[float | None]] | None
    output_relative_error: float | None
    dense_ppl: float | None
    sparse_ppl: float | None
    delta_ppl: float | None
    delta_nll: float | None
    delta_nll_se: float | None
    next_token_kl: float | None
    top1_agreement: float | None
    per_layer_delta_ppl: list[float | None] | None
    cumulative_delta_ppl: list[float | None] | None
    adapted_ppl: float | None
    recovered: float | None
    adapted_next_token_kl: float | None
    adapted_top1_agreement: float | None
    adapted_achieved_sparsity: float | None
    adapted_mass_recall: list[float | None] | None
    adapted_mass_recall_per_head: list[list[float | None]] | None
    adapted_kl: list[float | None] | None
    adapted_kl_per_head: list[list[float | None]] | None
    attention_time_dense: float | None
    attention_time_sparse: float | None
    attention_kernel: str | None
    attention_tiles_skipped: float | None
    notes: list[str]
    continuations: Continuations
    continuation_tokens: ContinuationTokens


class Info(TypedDict):
    """The ``info`` trait: what the result is of (:func:`payload.info_payload`).

    model: the model's display name.
    n_layers: attention layers.
    n_heads: query heads per layer.
    n_kv_heads: key/value heads per layer (fewer than n_heads under grouped-query attention).
    n_tokens: tokens analysed (after any truncation to max_tokens); the tokens themselves are the ``tokens`` trait
        (sent once per text: a mask or sparsity change, which changes ``mask_label``, does not send them again).
    causal: whether the model is causal (False: an encoder, no next-token head).
    mask: the mask's id.
    mask_label: the mask with its parameters, e.g. ``sink_window(sinks=4, window=60)``.
    mask_params: the parameters the mask ran with (the budget parameter as the sparsity slider set it).
    budget: the name of the parameter the sparsity slider sets (None: the mask has none).
    reachable: ``[min, max]``, the sparsity the mask can reach at this length.
    note: the result's notes in one line ("" when there are none).
    """

    model: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_tokens: int
    causal: bool
    mask: str
    mask_label: str
    mask_params: dict[str, float]
    budget: str | None
    reachable: list[float]
    note: str


class _StatusKeys(TypedDict):
    busy: bool
    error: str | None
    stage: str
    started: float
    request: int


class Status(_StatusKeys, total=False):
    """The ``status`` trait: what the kernel is doing (:func:`payload.status_payload`, its one builder).

    busy: whether a request is being computed.
    error: the message of the last request's error, None when it succeeded (or is still running).
    stage: the stage running (e.g. "running the model", "per-layer curve"; "" when none).
    started: when the current request started, milliseconds since the epoch (0.0 before the first).
    request: the number of the last request the shown state answers: the frontend waits for its own.
    progress: fraction of the stage done, in [0, 1]; present while a stage reports progress.
    detail: a short traceback of an unexpected error; present only with such an error.
    """

    progress: float
    detail: str


class CatalogEntry(TypedDict):
    """An entry of the ``catalog`` trait: one available mask.

    id: the mask's id (the ``mask`` trait's value).
    description: one line about the pattern.
    paper: the paper it comes from.
    budget: the parameter the sparsity slider sets (None: no slider).
    params: every parameter with its default.
    score_dependent: whether the pattern reads the attention scores.
    """

    id: str
    description: str
    paper: str
    budget: str | None
    params: dict[str, float]
    score_dependent: bool


class _AdaptStateKeys(TypedDict):
    state: Literal["none", "training", "ready", "cancelled", "failed"]
    seconds_per_step: float | None


class AdaptState(_AdaptStateKeys, total=False):
    """The ``adaptation`` trait: the Adapt control's state (:func:`payload.adapt_payload`).

    state: "none" (nothing trained for the current mask), "training", "ready" (adapters for the current mask and
        sparsity: the comparison has its adapted pass), "cancelled" or "failed".
    seconds_per_step: the estimated seconds per training step on this machine (None until measured).
    phase: while training: "samples" (the model writing its training texts) or "training".
    done: steps done.
    steps: steps asked for.
    loss: the last step's loss (KL, nats per position).
    elapsed: seconds since the training started.
    mask: the mask the adapters were trained under (with ``sparsity``).
    sparsity: the sparsity they were trained at.
    from_cache: whether they were read from the disk cache instead of trained.
    error: why it failed.
    """

    phase: str
    done: int
    steps: int
    loss: float | None
    elapsed: float
    mask: str
    sparsity: float
    from_cache: bool
    error: str


class AdaptMessage(TypedDict):
    """Browser → kernel custom message: the Adapt button (train ``adapt_steps`` steps under the current mask).

    type: always "adapt".
    """

    type: Literal["adapt"]


class CancelAdaptMessage(TypedDict):
    """Browser → kernel custom message: the Cancel button of a running adaptation.

    type: always "cancel_adapt".
    """

    type: Literal["cancel_adapt"]


class ExploreMessage(TypedDict):
    """Browser → kernel custom message: the Cost tab's button (open the cost explorer on the comparison on screen).

    type: always "explore".
    """

    type: Literal["explore"]


class DownloadMessage(TypedDict):
    """Kernel → browser custom message: a file to hand to the browser as a download; its bytes are the first buffer.

    type: always "download".
    filename: the suggested file name.
    mime: the file's media type.
    """

    type: Literal["download"]
    filename: str
    mime: str


class PaintedMessage(TypedDict):
    """Browser → kernel custom message: a new main view is on screen (the kernel's next stage waits for it, briefly).

    type: always "painted".
    """

    type: Literal["painted"]


class _ExportGifKeys(TypedDict):
    type: Literal["export_gif"]


class ExportGifMessage(_ExportGifKeys, total=False):
    """Browser → kernel custom message: the Export GIF button; the GIF comes back as a :class:`DownloadMessage`.

    type: always "export_gif".
    view: the GIF's view ("side_by_side" when absent).
    duration_ms: milliseconds per frame (700 when absent).
    """

    view: str
    duration_ms: int


class WidgetState(TypedDict):
    """Every synced trait of the widget and its type. Inputs (set by Python or the frontend's controls): text, mask,
    sparsity, mask_params, layer, head, zoom (``[q0, q1, k0, k1]`` or ``[]``), position (-1: the last), per_layer,
    time_attention (measure the attention time), paper_budget (the mask at its paper's own budget and parameters,
    ``sparsity="paper"``: the slider is set aside),
    max_tokens, export_path, compare_with ("sparse" or "adapted": the masked pass shown), adapt_steps. Outputs
    (computed by the kernel): catalog, caveat, info, tokens (the tokens as readable strings), metrics, view,
    dense_map (the view's dense values), next_tokens (the top-5 after ``position``), layer_chart (the per-layer
    perplexity figure), gallery, status, adaptation, explorer (the cost explorer on the comparison on screen, opened
    by the Cost tab: a widget reference, "anywidget:<model id>", that the frontend renders inside the widget; None
    until opened)."""

    text: str
    mask: str
    sparsity: float
    mask_params: dict[str, float]
    layer: int
    head: int
    zoom: list[int]
    position: int
    catalog: list[CatalogEntry]
    caveat: str
    info: Info | Empty
    tokens: list[str]
    metrics: MetricsPayload | Empty
    view: View | Empty
    dense_map: DenseMap | Empty
    next_tokens: NextTokenView | Empty
    layer_chart: Figure | Empty
    gallery: Gallery | Empty
    status: Status
    export_path: str
    per_layer: bool
    time_attention: bool
    paper_budget: bool
    explorer: str | None
    max_tokens: int
    compare_with: str
    adapt_steps: int
    adaptation: AdaptState


# ------------------------------------------------------------------------------------------- the cost explorer
class ExplorerSettings(TypedDict):
    """The cost explorer's controls (``CostExplorer.settings``, set by the browser; ``explorer.state`` is a copy).

    preset: the model's name ("custom" for dims set by hand). variant: "MHA", "GQA", "MQA", "MLA" or "DSA".
    hidden, heads, kv_heads, head_dim, layers, rope: the attention's dims; q_lora_rank, kv_lora_rank, qk_nope,
    qk_rope, v_head: MLA's (used by MLA and DSA); index_heads, index_head_dim, index_topk: DSA's indexer.
    requests: ``[context, new]`` per request. dtype: "fp32", "bf16", "fp16" or "fp8". tp, dp: ranks. flash:
    FlashAttention, with ``tile`` ``[B_r, B_c]``. page_size, window, topk: 0 for off. accelerator: "A100", "H100"
    or "B200" (the one the totals stress). pipeline: "auto", "prefill" or "decode" (MLA). mask: a library mask id
    ("" for none; "realised" for a comparison's), with ``sparsity``. selected: the clicked op or tensor id ("")."""

    preset: str
    variant: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    rope: bool
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope: int
    qk_rope: int
    v_head: int
    index_heads: int
    index_head_dim: int
    index_topk: int
    requests: list[list[int]]
    dtype: str
    tp: int
    dp: int
    flash: bool
    tile: list[int]
    page_size: int
    window: int
    topk: int
    accelerator: str
    pipeline: str
    mask: str
    sparsity: float
    selected: str


class ExplorerTensor(TypedDict):
    """A tensor of the layer: ``shape`` with a name per dim (``dims``), the ``bytes`` it moves (stored values only),
    ``role`` ("activation", "weight", "cache" or "chip": never leaves the chip), its ``column`` left to right and its
    ``lane`` (the row of the picture it is drawn in: MLA draws each pipeline in a lane of its own, ``lanes``)."""

    id: str
    name: str
    shape: list[int]
    dims: list[str]
    bytes: float
    role: str
    column: int
    lane: int


class ExplorerRoofline(TypedDict):
    """An op on one accelerator: ``seconds`` = max(compute, memory) at the ``peak`` FLOP/s of the ``dtype`` it runs
    in and the HBM ``bandwidth`` (bytes/s); ``ridge`` in FLOPs per byte; ``bound`` "compute" or "memory";
    ``comm_seconds``: its all-reduce over NVLink."""

    accelerator: str
    dtype: str
    seconds: float
    compute_seconds: float
    memory_seconds: float
    comm_seconds: float
    bound: str
    ridge: float
    peak: float
    bandwidth: float


class ExplorerOp(TypedDict):
    """An op between tensors (ids in ``inputs`` and ``output``), at ``column`` of ``lane``, with its costs
    (:class:`~attnsparse_widget.costs.OpCost`) and its roofline on every accelerator."""

    id: str
    name: str
    kind: str
    stage: str
    column: int
    lane: int
    inputs: list[str]
    output: str
    flops: float
    bytes_read: float
    bytes_written: float
    comm_bytes: float
    intensity: float
    dtype: str
    rooflines: list[ExplorerRoofline]


class ExplorerTotals(TypedDict):
    """One layer's and the whole model's totals (the busiest data-parallel rank, ``dp_rank``), the KV cache of all
    layers (with paging: ``kv_blocks`` allocated, ``kv_occupancy`` filled; else None), seconds per accelerator."""

    layer_flops: float
    model_flops: float
    layer_bytes: float
    model_bytes: float
    comm_bytes: float
    kv_cache_bytes: float
    kv_blocks: int | None
    kv_occupancy: float | None
    layer_seconds: dict[str, float]
    model_seconds: dict[str, float]
    layers: int
    dp_rank: int


class ExplorerTiles(TypedDict):
    """FlashAttention's tiles of ``rows`` x ``cols`` on the busiest data-parallel rank (the one the totals show):
    per head, ``computed`` of ``total``; ``grid`` its first request's tiles, each the percentage of heads that
    compute it (u1)."""

    rows: int
    cols: int
    computed: float
    total: int
    grid: MatrixPayload


class ExplorerGraph(TypedDict):
    """The ``graph`` trait of the cost explorer: what it draws (src/attnsparse_widget/cost_graph.py).

    pipeline: the MLA pipeline costed ("prefill" decompressed, "decode" absorbed; "" for other variants). lanes: the
    picture's rows, top to bottom, each with its title (MLA: both pipelines, decompressed above absorbed, the one not
    costed drawn faded; [] for one unnamed lane); costed_lane: the lane the totals count. pairs:
    pairs per head scored by the batch (``dense_pairs`` with no mask). mask: the batch's mask picture (f2: the
    fraction of a cell's pairs computed, NaN outside every request). block_table: paged KV's block ids per request
    ([] without paging). tp_heads: the query heads of each TP rank; tp_kv_heads: key/value heads per rank.
    dp_requests: the requests of each DP rank. crossover: MLA's ``[new, decompressed FLOPs, absorbed FLOPs]`` rows
    ([] for other variants) and ``crossover_at`` where they cross; pipeline_flops: this batch's layer FLOPs on each
    pipeline, side by side ("prefill", "decode"; {} for other variants). measured_dense / measured_sparse: a
    comparison's attention seconds on this machine (None when not measured). svg: the picture
    (src/attnsparse_widget/cost_svg.py), every tensor and op a group with its ``data-id``."""

    title: str
    variant: str
    pipeline: str
    lanes: list[str]
    costed_lane: int
    tensors: list[ExplorerTensor]
    ops: list[ExplorerOp]
    totals: ExplorerTotals
    pairs: float
    dense_pairs: float
    mask: MatrixPayload
    tiles: ExplorerTiles
    block_table: list[list[int]]
    tp_heads: list[list[int]]
    tp_kv_heads: int
    dp_requests: list[list[int]]
    crossover: list[list[float]]
    crossover_at: float | None
    pipeline_flops: dict[str, float]
    measured_dense: float | None
    measured_sparse: float | None
    svg: str


class ExplorerState(TypedDict):
    """Every synced trait of the cost explorer: ``_kind`` ("cost-explorer": the bundle's one entry renders the
    explorer), ``settings`` (inputs), ``graph`` (computed; ``{}`` before the first) and ``error`` (why the settings
    could not be costed; "" when they could)."""

    _kind: str
    settings: ExplorerSettings
    graph: ExplorerGraph | Empty
    error: str


__all__ = [
    "AdaptMessage",
    "AdaptState",
    "CancelAdaptMessage",
    "CatalogEntry",
    "ContinuationTokens",
    "Continuations",
    "DenseMap",
    "Drop",
    "DownloadMessage",
    "Empty",
    "ExplorerGraph",
    "ExplorerOp",
    "ExplorerRoofline",
    "ExplorerSettings",
    "ExplorerState",
    "ExplorerTensor",
    "ExplorerTiles",
    "ExplorerTotals",
    "ExportGifMessage",
    "Figure",
    "Gallery",
    "Info",
    "MatrixPayload",
    "MetricsPayload",
    "NextTokenView",
    "NextTokens",
    "PaintedMessage",
    "Status",
    "View",
    "WidgetState",
]
