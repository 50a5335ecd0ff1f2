// The kernel-browser contract: what every synced trait and custom message holds, key for key the TypedDicts of
// src/attnsparse_widget/contract.py (same keys, same optionality; tests/test_contract.py checks both directions and
// the types). Optional keys are `key?:`; an output trait is the empty object (Empty) until its first value.
//
// Conventions: a non-finite float travels as null; a 2-D array travels as a MatrixPayload whose bytes arrive as a
// binary buffer. Keep one property per line and no inline object types: the contract test parses this file.

/** The bytes of a MatrixPayload: a DataView from a comm message (tests and tools may pass the others). */
export type Binary = DataView | ArrayBuffer | Uint8Array;

/** An output trait before its first value: `{}` (layer_chart also stays empty for an encoder). */
export interface Empty {
  [key: string]: never;
}

/** A 2-D array as it travels; its bytes come as a binary websocket frame. */
export interface MatrixPayload {
  /** [rows, cols] */
  shape: number[];
  /** "f2": float16 (probabilities, NaN where blank); "u1": uint8 (codes, percentages, thumbnails) */
  dtype: "f2" | "u1";
  /** row-major, little endian */
  data: Binary;
}

/** A plotly figure as sent (src/attnsparse_widget/figures.py), every 2-D array in it a MatrixPayload. */
export interface Figure {
  /** the traces */
  data: Record<string, unknown>[];
  /** the plotly layout */
  layout: Record<string, unknown>;
}

/** A dropped (or partly dropped) cell of the main view with dense weight. */
export interface Drop {
  /** query position (the cell's first query token) */
  q: number;
  /** key position (the cell's first key token) */
  k: number;
  /** the dense probability the mask dropped */
  w: number;
}

/** The top-5 next tokens after the view's position under each regime, most probable first. */
export interface NextTokens {
  /** [token, probability] with dense attention */
  dense: [string, number][];
  /** the same with the sparse mask */
  sparse: [string, number][];
  /** the same for the adapted model under the mask */
  adapted?: [string, number][];
}

/** The `view` trait: the main view of one layer and head, and the mask preview. */
export interface View {
  /** the layer shown */
  layer: number;
  /** the head shown, -1 for the mean over heads */
  head: number;
  /** the masked pass beside the dense one: "sparse" (post-hoc) or "adapted" */
  masked: string;
  /** [q0, q1, k0, k1], half-open token ranges shown */
  region: number[];
  /** tokens per cell and axis (1: full resolution) */
  factor: number;
  /** dense | sparse | sparse − dense heatmaps, one trace each, named by panel; the dense trace's z is in `dense_map` */
  figure: Figure;
  /** the keep-pattern figure (the Mask tab) */
  mask_figure: Figure;
  /** uint8 code per cell: NOT_ALLOWED 0, KEPT 1, PARTLY_KEPT 2, DROPPED 3 */
  states: MatrixPayload;
  /** uint8 percentage of each cell's allowed pairs kept */
  kept_pct: MatrixPayload;
  /** the heaviest dropped cells, heaviest first */
  drops: Drop[];
}

/** The `next_tokens` trait (language models, once the next-token metrics are in): apart from the view, so that a
 *  click on a row, or the metrics arriving after the view, send only these. */
export interface NextTokenView {
  /** the query position, in [0, n_tokens) */
  position: number;
  /** the top-5 next tokens after position under each regime */
  top: NextTokens;
}

/** The `dense_map` trait: the values of the main view's dense panel, sent only when they change; they belong to the
 *  view whose layer, head and region they carry. */
export interface DenseMap {
  layer: number;
  head: number;
  region: number[];
  /** the dense panel's cells (NaN where no pair is allowed) */
  z: MatrixPayload;
}

/** The `gallery` trait: every layer x head as a dense and a sparse thumbnail. */
export interface Gallery {
  /** rows of thumbnails */
  n_layers: number;
  /** thumbnails per row */
  n_heads: number;
  /** a thumbnail's side, in cells */
  cell: number;
  /** dense thumbnails stitched into one uint8 image [n_layers * cell, n_heads * cell] */
  dense: MatrixPayload;
  /** the masked pass's thumbnails, stitched the same way */
  sparse: MatrixPayload;
  /** the masked pass shown: "sparse" (post-hoc) or "adapted" */
  masked: string;
  /** per head, layer-major: KL(sparse ‖ dense) averaged over rows */
  kl: (number | null)[];
  /** per head, layer-major: 1 − attention mass recall */
  mass_lost: (number | null)[];
}

/** The greedy continuations as text; a key appears once that regime's continuation is computed. */
export interface Continuations {
  dense?: string;
  sparse?: string;
  /** the adapted model under the mask (a comparison with an adaptation) */
  adapted?: string;
}

/** The continuations as decoded tokens. */
export interface ContinuationTokens {
  dense?: string[];
  sparse?: string[];
  adapted?: string[];
}

/** The `metrics` trait: the Metrics fields (non-finite floats as null) plus the continuations; null where not
 * computed (yet) or not applicable. Per-layer lists have one value per layer, *_per_head are [layer][head]. */
export interface MetricsPayload {
  /** the sparsity asked for (null: the mask's own parameters decide) */
  requested_sparsity: number | null;
  /** fraction of allowed query-key pairs dropped */
  achieved_sparsity: number | null;
  achieved_sparsity_per_head: (number | null)[][];
  /** per layer: dense probability on kept pairs */
  mass_recall: (number | null)[] | null;
  mass_recall_per_head: (number | null)[][] | null;
  mass_recall_min: number | null;
  mass_recall_p5: number | null;
  /** per layer: KL(sparse ‖ dense) of the attention rows */
  kl: (number | null)[] | null;
  kl_per_head: (number | null)[][] | null;
  output_relative_error: number | null;
  dense_ppl: number | null;
  sparse_ppl: number | null;
  delta_ppl: number | null;
  delta_nll: number | null;
  /** standard error of delta_nll over the scored tokens (a scale for one text's noise) */
  delta_nll_se: number | null;
  /** KL(dense ‖ sparse) of the next-token distribution, mean over positions */
  next_token_kl: number | null;
  /** positions where both regimes predict the same next token */
  top1_agreement: number | null;
  /** ΔPPL with the mask at layer l only (grows as it is computed) */
  per_layer_delta_ppl: (number | null)[] | null;
  /** ΔPPL with the mask at layers 0..l */
  cumulative_delta_ppl: (number | null)[] | null;
  /** perplexity of the adapted model under the mask (null without an adaptation) */
  adapted_ppl: number | null;
  /** fraction of the perplexity gap won back: (sparse_ppl − adapted_ppl) / (sparse_ppl − dense_ppl) */
  recovered: number | null;
  adapted_next_token_kl: number | null;
  adapted_top1_agreement: number | null;
  adapted_achieved_sparsity: number | null;
  adapted_mass_recall: (number | null)[] | null;
  adapted_mass_recall_per_head: (number | null)[][] | null;
  /** per layer: KL(adapted ‖ dense) of the attention rows */
  adapted_kl: (number | null)[] | null;
  adapted_kl_per_head: (number | null)[][] | null;
  /** measured seconds of one forward pass's attention, every layer, dense causal SDPA (null unless asked for) */
  attention_time_dense: number | null;
  /** the same under the sparse pass's keep-masks on a block-sparse kernel */
  attention_time_sparse: number | null;
  /** that kernel: "flex" (FlexAttention) or "sdpa" (SDPA with the mask) */
  attention_kernel: string | null;
  /** fraction of the allowed 128 x 128 tiles the sparse kernel skipped */
  attention_tiles_skipped: number | null;
  notes: string[];
  continuations: Continuations;
  continuation_tokens: ContinuationTokens;
}

/** The `info` trait: what the result is of. */
export interface Info {
  /** the model's display name */
  model: string;
  n_layers: number;
  /** query heads per layer */
  n_heads: number;
  /** key/value heads per layer (fewer under grouped-query attention) */
  n_kv_heads: number;
  /** tokens analysed (the tokens themselves: the `tokens` trait) */
  n_tokens: number;
  /** false: an encoder (no next-token head) */
  causal: boolean;
  /** the mask's id */
  mask: string;
  /** the mask with its parameters */
  mask_label: string;
  /** the parameters the mask ran with */
  mask_params: Record<string, number>;
  /** the parameter the sparsity slider sets (null: none) */
  budget: string | null;
  /** [min, max] sparsity the mask can reach at this length */
  reachable: number[];
  /** the result's notes in one line ("" when none) */
  note: string;
}

/** The `status` trait: what the kernel is doing. */
export interface Status {
  /** a request is being computed */
  busy: boolean;
  /** the last request's error (null: none) */
  error: string | null;
  /** the stage running ("" when none) */
  stage: string;
  /** when the current request started, ms since the epoch */
  started: number;
  /** the last request the shown state answers */
  request: number;
  /** fraction of the stage done, while a stage reports progress */
  progress?: number;
  /** a short traceback, with an unexpected error only */
  detail?: string;
}

/** An entry of the `catalog` trait: one available mask. */
export interface CatalogEntry {
  id: string;
  description: string;
  paper: string;
  /** the parameter the sparsity slider sets (null: no slider) */
  budget: string | null;
  /** every parameter with its default */
  params: Record<string, number>;
  score_dependent: boolean;
}

/** The `adaptation` trait: the Adapt control's state. */
export interface AdaptState {
  /** "none" | "training" | "ready" (the comparison has its adapted pass) | "cancelled" | "failed" */
  state: "none" | "training" | "ready" | "cancelled" | "failed";
  /** estimated seconds per training step on this machine (null until measured) */
  seconds_per_step: number | null;
  /** while training: "samples" (the model writing its training texts) or "training" */
  phase?: string;
  done?: number;
  steps?: number;
  /** the last step's loss (KL, nats per position) */
  loss?: number | null;
  elapsed?: number;
  /** the mask and sparsity the adapters were trained under */
  mask?: string;
  sparsity?: number;
  from_cache?: boolean;
  error?: string;
}

/** Browser → kernel: the Adapt button. */
export interface AdaptMessage {
  type: "adapt";
}

/** Browser → kernel: the Cancel button of a running adaptation. */
export interface CancelAdaptMessage {
  type: "cancel_adapt";
}

/** Browser → kernel: the Cost tab's button (open the cost explorer on the comparison on screen). */
export interface ExploreMessage {
  type: "explore";
}

/** Kernel → browser: a file to download; its bytes are the first buffer. */
export interface DownloadMessage {
  type: "download";
  filename: string;
  mime: string;
}

/** Browser → kernel: a new main view is on screen. */
export interface PaintedMessage {
  type: "painted";
}

/** Browser → kernel: the Export GIF button. */
export interface ExportGifMessage {
  type: "export_gif";
  /** the GIF's view ("side_by_side" when absent) */
  view?: string;
  /** milliseconds per frame (700 when absent) */
  duration_ms?: number;
}

/** Every synced trait of the widget: the model's state. */
export interface WidgetState {
  text: string;
  mask: string;
  sparsity: number;
  mask_params: Record<string, number>;
  layer: number;
  head: number;
  /** [q0, q1, k0, k1] or [] for the whole map */
  zoom: number[];
  /** query position of the next-token top-5 (-1: the last) */
  position: number;
  catalog: CatalogEntry[];
  caveat: string;
  info: Info | Empty;
  /** the tokens as readable strings (sent once per text) */
  tokens: string[];
  metrics: MetricsPayload | Empty;
  view: View | Empty;
  dense_map: DenseMap | Empty;
  next_tokens: NextTokenView | Empty;
  layer_chart: Figure | Empty;
  gallery: Gallery | Empty;
  status: Status;
  export_path: string;
  per_layer: boolean;
  time_attention: boolean;
  /** the mask at its paper's own budget and parameters (sparsity="paper"): the slider is set aside */
  paper_budget: boolean;
  /** the cost explorer on the comparison on screen (the Cost tab's button): a widget reference, "anywidget:<model id>", rendered inside the widget; null until opened */
  explorer: string | null;
  max_tokens: number;
  /** the masked pass shown: "sparse" (post-hoc) or "adapted" */
  compare_with: string;
  /** training steps the Adapt button runs */
  adapt_steps: number;
  adaptation: AdaptState;
}

/** Whether an output trait holds a value (it is {} before the first). */
export function filled<T extends object>(value: T | Empty | null | undefined): value is T {
  return value !== null && value !== undefined && Object.keys(value).length > 0;
}

// ------------------------------------------------------------------------------------------ the cost explorer
/** The cost explorer's controls (`CostExplorer.settings`, set by the browser; `explorer.state` is a copy). */
export interface ExplorerSettings {
  preset: string;
  variant: string;
  hidden: number;
  heads: number;
  kv_heads: number;
  head_dim: number;
  layers: number;
  rope: boolean;
  q_lora_rank: number;
  kv_lora_rank: number;
  qk_nope: number;
  qk_rope: number;
  v_head: number;
  index_heads: number;
  index_head_dim: number;
  index_topk: number;
  requests: number[][];
  dtype: string;
  tp: number;
  dp: number;
  flash: boolean;
  tile: number[];
  page_size: number;
  window: number;
  topk: number;
  accelerator: string;
  pipeline: string;
  mask: string;
  sparsity: number;
  selected: string;
}

/** A tensor of the layer: `shape` with a name per dim (`dims`), the `bytes` it moves (stored values only), `role` ("activation", "weight", "cache" or "chip": never leaves the chip), its `column` left to right and its `lane` (the row of the picture it is drawn in: MLA draws each pipeline in a lane of its own, `lanes`). */
export interface ExplorerTensor {
  id: string;
  name: string;
  shape: number[];
  dims: string[];
  bytes: number;
  role: string;
  column: number;
  lane: number;
}

/** An op on one accelerator: `seconds` = max(compute, memory) at the `peak` FLOP/s of the `dtype` it runs in and the HBM `bandwidth` (bytes/s); `ridge` in FLOPs per byte; `bound` "compute" or "memory"; `comm_seconds`: its all-reduce over NVLink. */
export interface ExplorerRoofline {
  accelerator: string;
  dtype: string;
  seconds: number;
  compute_seconds: number;
  memory_seconds: number;
  comm_seconds: number;
  bound: string;
  ridge: number;
  peak: number;
  bandwidth: number;
}

/** An op between tensors (ids in `inputs` and `output`), at `column`, with its costs (:class:`~attnsparse_widget.costs.OpCost`) and its roofline on every accelerator. */
export interface ExplorerOp {
  id: string;
  name: string;
  kind: string;
  stage: string;
  column: number;
  lane: number;
  inputs: string[];
  output: string;
  flops: number;
  bytes_read: number;
  bytes_written: number;
  comm_bytes: number;
  intensity: number;
  dtype: string;
  rooflines: ExplorerRoofline[];
}

/** One layer's and the whole model's totals (the busiest data-parallel rank, `dp_rank`), the KV cache of all layers (with paging: `kv_blocks` allocated, `kv_occupancy` filled; else None), seconds per accelerator. */
export interface ExplorerTotals {
  layer_flops: number;
  model_flops: number;
  layer_bytes: number;
  model_bytes: number;
  comm_bytes: number;
  kv_cache_bytes: number;
  kv_blocks: number | null;
  kv_occupancy: number | null;
  layer_seconds: Record<string, number>;
  model_seconds: Record<string, number>;
  layers: number;
  dp_rank: number;
}

/** FlashAttention's tiles of `rows` x `cols` on the busiest data-parallel rank (the one the totals show): per head, `computed` of `total`; `grid` its first request's tiles, each the percentage of heads that compute it (u1). */
export interface ExplorerTiles {
  rows: number;
  cols: number;
  computed: number;
  total: number;
  grid: MatrixPayload;
}

/** The `graph` trait of the cost explorer: what it draws (src/attnsparse_widget/cost_graph.py). */
export interface ExplorerGraph {
  title: string;
  variant: string;
  pipeline: string;
  lanes: string[];
  costed_lane: number;
  tensors: ExplorerTensor[];
  ops: ExplorerOp[];
  totals: ExplorerTotals;
  pairs: number;
  dense_pairs: number;
  mask: MatrixPayload;
  tiles: ExplorerTiles;
  block_table: number[][];
  tp_heads: number[][];
  tp_kv_heads: number;
  dp_requests: number[][];
  crossover: number[][];
  crossover_at: number | null;
  pipeline_flops: Record<string, number>;
  measured_dense: number | null;
  measured_sparse: number | null;
  svg: string;
}

/** Every synced trait of the cost explorer: `settings` (inputs), `graph` (computed; `{}` before the first) and `error` (why the settings could not be costed; "" when they could). */
export interface ExplorerState {
  _kind: string;
  settings: ExplorerSettings;
  graph: ExplorerGraph | Empty;
  error: string;
}
