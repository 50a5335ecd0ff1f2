// attnsparse-widget frontend: renders what the kernel computed and reports intent by setting input traits.
//
// Python owns the state and the computation (src/attnsparse_widget/widget.py). Here every trait change repaints
// only what depends on it, and a pane that is not on screen is only marked stale and painted when it is shown.
import Plotly from "plotly.js-cartesian-dist-min";
import type { AnyModel, RenderProps } from "@anywidget/types";
import { filled, type AdaptMessage, type AdaptState, type CancelAdaptMessage, type DownloadMessage, type ExportGifMessage,
  type Figure, type Gallery, type Info, type MetricsPayload, type PaintedMessage, type Status, type NextTokenView, type View,
  type WidgetState, type ExplorerState, type ExploreMessage } from "./contract";
import { decodeMatrix } from "./payload";
import { renderExplorer } from "./explorer";
import { cellInfo, cellsOf, decodeTree, firstDivergence, timeText, visibleToken, weightText, withDenseMap, type Cells,
  type Decoded } from "./figures";
import { galleryFigure, galleryOrder, restitch, slotAt, slotInfo, type SortKey } from "./gallery";
import "./widget.css";

/** What plotly passes to its hover and click handlers (the fields read here). */
interface PlotlyPoint {
  x: number | string;
  y: number | string;
  pointNumber?: number | number[];
  pointIndex?: number | number[];
}
interface PlotlyEvent {
  points?: PlotlyPoint[];
  event?: MouseEvent;
}
/** plotly_relayout: the changed layout paths ("xaxis.range[0]", "xaxis.autorange", ...) and their values. */
type RelayoutEvent = Record<string, unknown>;
/** A plot element once plotly has drawn it: it has gained plotly's event API. */
type PlotElement = HTMLElement & { on(name: string, fn: (ev: never) => void): void };

type Pane = "main" | "gallery" | "output" | "mask" | "cost";

/** What anywidget 0.11 adds to a view's props: ``host.getWidget(ref)`` renders a child widget (composition) and
 * ``signal`` ends with the view. Older hosts hand neither: the Cost tab then says how to open the explorer. */
interface Host {
  getWidget(ref: string): Promise<{ render(props: { el: HTMLElement; signal?: AbortSignal }): Promise<void> }>;
}
type HostedProps = RenderProps<WidgetState> & { host?: Host; signal?: AbortSignal };
const CONFIG = { displaylogo: false, responsive: false, modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d", "autoScale2d"] };

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  // Keys typed into a control (arrows on a slider, letters in the text box) are the control's, not notebook
  // shortcuts: Lumino stops matching key bindings at an element carrying this attribute, the target included.
  if (tag === "input" || tag === "select" || tag === "textarea") el.setAttribute("data-lm-suppress-shortcuts", "true");
  if (text !== undefined) el.textContent = text; // textContent, never innerHTML: user text stays literal
  return el;
}

function fmt(v: unknown, digits = 3): string {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "n/a";
}

function pct(v: unknown, digits = 1): string {
  return typeof v === "number" && Number.isFinite(v) ? `${(100 * v).toFixed(digits)}%` : "…";
}

/** Seconds as "45 s" or "3.2 min". */
function duration(s: number): string {
  return s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(1)} min`;
}

/** Event wiring per plot, run once after its first draw: plotly gives the element its `.on` only then. */
const wiring = new WeakMap<HTMLElement, () => void>();

/** Draw with Plotly.react, then count the paint on the element (tests and benchmarks wait on these marks). */
function draw(el: HTMLElement, fig: Figure, width: number, height: number): Promise<void> {
  const name = el.dataset.name ?? "plot";
  const seq = Number(el.dataset.rendered ?? 0) + 1;
  performance.mark(`attnsparse:${name}:start:${seq}`);
  return Plotly.react(el, fig.data, { ...fig.layout, width, height, autosize: false }, CONFIG).then(() => {
    const wire = wiring.get(el);
    if (wire) { wiring.delete(el); wire(); }
    el.dataset.rendered = String(seq);
    performance.mark(`attnsparse:${name}:end:${seq}`);
  });
}

function render({ model: m, el, host }: HostedProps) {
  const root = h("div", { class: "asw-root" });
  el.appendChild(root);

  // ------------------------------------------------------------------------------------------------ the page
  const caveat = h("div", { class: "asw-caveat" }, m.get("caveat"));
  const controls = h("div", { class: "asw-controls" });
  const text = h("textarea", { class: "asw-text", rows: "3", "aria-label": "input text", placeholder: "text to analyse" }) as HTMLTextAreaElement;
  const run = h("button", { class: "asw-run", title: "run the model on this text (Ctrl+Enter)" }, "Run text");
  const maskSel = h("select", { class: "asw-mask", "aria-label": "mask" }) as HTMLSelectElement;
  const maskPaper = h("div", { class: "asw-mask-desc" });
  const slider = h("input", { type: "range", min: "0", max: "99", step: "1", class: "asw-sparsity", "aria-label": "sparsity" }) as HTMLInputElement;
  const sparsityLabel = h("span", { class: "asw-sparsity-label" });
  const paperBudget = h("input", { type: "checkbox", class: "asw-paper", "aria-label": "the paper's budget" }) as HTMLInputElement;
  const paperLabel = h("label", { class: "asw-paper-label", title: "every parameter, the budget included, as the mask's paper ships it (sparsity=\"paper\")" });
  paperLabel.append(paperBudget, document.createTextNode(" paper"));
  const params = h("div", { class: "asw-params" });
  const layer = h("input", { type: "range", min: "0", max: "0", step: "1", class: "asw-layer", "aria-label": "layer" }) as HTMLInputElement;
  const layerLabel = h("span", { class: "asw-layer-label" });
  const headSel = h("select", { class: "asw-head", "aria-label": "head" }) as HTMLSelectElement;
  const busy = h("span", { class: "asw-busy", role: "status" });
  const error = h("div", { class: "asw-error", role: "alert" });
  const note = h("div", { class: "asw-note", role: "note" });
  const tooltip = h("div", { class: "asw-tooltip" });
  // the Adapt control: train adapters under the current mask, then show the adapted pass next to the post-hoc one
  const adaptSteps = h("input", { type: "number", min: "1", step: "10", class: "asw-adapt-steps", "aria-label": "adaptation steps" }) as HTMLInputElement;
  const adaptEstimate = h("span", { class: "asw-hint asw-adapt-estimate" });
  const adaptButton = h("button", { class: "asw-adapt", title: "train LoRA adapters under this mask (self-distillation from the dense model), then compare" }, "Adapt");
  const cancelButton = h("button", { class: "asw-adapt-cancel", title: "stop the training: nothing is kept" }, "Cancel");
  const adaptInfo = h("span", { class: "asw-adapt-info", role: "status" });
  const showSel = h("select", { class: "asw-compare-with", "aria-label": "masked pass shown" }) as HTMLSelectElement;
  showSel.append(h("option", { value: "sparse" }, "post-hoc (mask forced on the dense model)"), h("option", { value: "adapted" }, "adapted (trained under the mask)"));
  const adaptRow = h("div", { class: "asw-row asw-adapt-row" });
  adaptRow.append(h("label", {}, "adapt"), adaptSteps, h("span", { class: "asw-hint" }, "steps"), adaptEstimate, adaptButton, cancelButton,
    adaptInfo, h("label", {}, "show"), showSel);

  const row = (...kids: HTMLElement[]) => { const r = h("div", { class: "asw-row" }); r.append(...kids); return r; };
  controls.append(
    row(text, run),
    row(h("label", {}, "mask"), maskSel, maskPaper),
    row(h("label", {}, "sparsity"), slider, paperLabel, sparsityLabel, params),
    row(h("label", {}, "layer"), layer, layerLabel, h("label", {}, "head"), headSel, busy),
    adaptRow,
  );

  const tabs = h("div", { class: "asw-tabs", role: "tablist" });
  const panes = {} as Record<Pane, HTMLElement>;
  const tabNames: [Pane, string][] = [["main", "Dense vs sparse"], ["gallery", "Head gallery"], ["output", "Output shift"], ["mask", "Mask"], ["cost", "Cost"]];
  for (const [key, label] of tabNames) {
    const b = h("button", { class: "asw-tab", "data-tab": key, role: "tab" }, label);
    b.onclick = () => select(key);
    tabs.appendChild(b);
    panes[key] = h("div", { class: "asw-pane", "data-pane": key });
  }
  const plot = (name: string, cls: string) => h("div", { class: `asw-plot ${cls}`, "data-name": name });
  const mainPlot = plot("main", "asw-main");
  const drops = h("div", { class: "asw-drops" });
  const gifButton = h("button", { class: "asw-export-gif", title: "an animated GIF stepping through every layer (rendered in the kernel)" }, "Export GIF");
  const pngButton = h("button", { class: "asw-export-png", title: "a PNG of this view" }, "PNG");
  panes.main.append(mainPlot, row(drops), row(h("span", { class: "asw-hint" }, "export:"), gifButton, pngButton));

  const sortSel = h("select", { class: "asw-sort", "aria-label": "gallery order" }) as HTMLSelectElement;
  for (const [v, l] of [["grid", "layer × head grid"], ["kl", "most changed first (KL sparse‖dense)"], ["mass_lost", "most attention mass lost first"]]) {
    sortSel.appendChild(h("option", { value: v }, l));
  }
  const galleryPlot = plot("gallery", "asw-gallery");
  panes.gallery.append(row(h("label", {}, "order"), sortSel, h("span", { class: "asw-hint" }, "each thumbnail is scaled to its head's own peak; click one to open it")), galleryPlot);

  const headline = h("div", { class: "asw-headline" });
  const progress = h("div", { class: "asw-progress" });
  const layerPlot = plot("layers", "asw-layers");
  const perLayer = h("input", { type: "checkbox", class: "asw-per-layer", "aria-label": "per-layer curve" }) as HTMLInputElement;
  const perLayerLabel = h("label", { class: "asw-hint", title: "about two replayed forward passes per layer: switch it off for long texts" }, " compute the per-layer curve");
  perLayerLabel.prepend(perLayer);
  const conts = h("div", { class: "asw-continuations" });
  const positionInput = h("input", { type: "number", min: "0", step: "1", class: "asw-position", "aria-label": "position" }) as HTMLInputElement;
  const nextTok = h("div", { class: "asw-next" });
  panes.output.append(headline, row(perLayerLabel, progress), layerPlot, conts,
    row(h("label", {}, "next token after position"), positionInput, h("span", { class: "asw-hint" }, "(or click a row of the heatmaps)")), nextTok);

  const maskPlot = plot("mask", "asw-maskplot");
  const maskInfo = h("div", { class: "asw-mask-info" });
  const timeAttention = h("input", { type: "checkbox", class: "asw-time-attention", "aria-label": "measure attention time" }) as HTMLInputElement;
  const timeLabel = h("label", { class: "asw-hint", title: "times one attention call per sampled layer, dense SDPA against the mask on FlexAttention; the first call at a new length compiles the kernel (seconds)" }, " measure the attention time");
  timeLabel.prepend(timeAttention);
  const timeInfo = h("div", { class: "asw-time-info" });
  panes.mask.append(maskInfo, row(timeLabel, timeInfo), maskPlot);

  const exploreButton = h("button", { class: "asw-explore", title: "FLOPs, bytes, KV cache and rooflines of this model's attention, counted from the keep-mask this comparison applied" }, "Open the cost explorer on this comparison");
  const costHint = h("span", { class: "asw-hint asw-cost-hint" });
  const costView = h("div", { class: "asw-cost" });
  panes.cost.append(row(exploreButton, costHint), costView);
  root.append(caveat, controls, error, note, tabs, ...Object.values(panes), tooltip);

  // ---------------------------------------------------------------------------------------------- the state
  let current: Pane = "main";
  const stale: Record<Pane, boolean> = { main: true, gallery: true, output: true, mask: true, cost: true };
  let view: Decoded<View> | null = null; // decoded once per `view` message, reused by painters and tooltip
  let cells: Cells | null = null;
  let gallery: { g: Gallery; dense: Float32Array[]; sparse: Float32Array[]; order: [number, number][] } | null = null;
  // the output traits as read by the painters: {} before their first value, so every key may be missing
  const infoOf = (): Partial<Info> => m.get("info") ?? {};
  const tokensOf = (): string[] => m.get("tokens") ?? [];
  const metricsOf = (): Partial<MetricsPayload> => m.get("metrics") ?? {};

  // every change of an input trait is marked, so a browser test can time "slider released → heatmaps repainted"
  const set = <K extends keyof WidgetState>(name: K, value: WidgetState[K]) => {
    performance.mark(`attnsparse:intent:${name}`); m.set(name, value); m.save_changes();
  };
  const width = () => Math.max(480, root.clientWidth || el.clientWidth || 1000);

  function select(key: Pane) {
    current = key;
    for (const [k, p] of Object.entries(panes)) p.style.display = k === key ? "" : "none";
    for (const b of Array.from(tabs.children)) {
      const on = (b as HTMLElement).dataset.tab === key;
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", String(on));
    }
    if (stale[key]) paint(key);
  }

  /** Mark panes stale; the visible one is painted now. Resolves once it is drawn. */
  function invalidate(...keys: Pane[]): Promise<void> {
    for (const k of keys) stale[k] = true;
    return keys.includes(current) ? paint(current) : Promise.resolve();
  }

  function paint(key: Pane): Promise<void> {
    stale[key] = false;
    if (key === "main") return paintMain();
    if (key === "gallery") return paintGallery();
    if (key === "output") return paintOutput();
    if (key === "cost") return Promise.resolve(); // the explorer paints itself
    return paintMask();
  }

  // ------------------------------------------------------------------------------------------ the Cost tab
  let explorerView: AbortController | null = null; // ends the explorer's view when another replaces it
  exploreButton.onclick = () => {
    const msg: ExploreMessage = { type: "explore" };
    costHint.textContent = "counting this comparison's mask…";
    m.send(msg);
  };
  async function paintCost() {
    const ref = m.get("explorer");
    explorerView?.abort();
    costView.replaceChildren();
    if (!ref) {
      costHint.textContent = "the layer shown, this text's length and the keep-mask the pass applied, counted exactly";
      return;
    }
    if (!host) {
      costHint.textContent = "this front end cannot show a widget inside another: run ex = w.explore(); ex in a cell";
      return;
    }
    explorerView = new AbortController();
    const target = h("div");
    costView.append(target);
    await (await host.getWidget(ref)).render({ el: target, signal: explorerView.signal });
    costHint.textContent = `opened on layer ${m.get("layer")} with the ${m.get("mask")} mask: press again after a change`;
  }

  // ---------------------------------------------------------------------------------------------- controls
  run.onclick = () => set("text", text.value);
  text.onkeydown = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); set("text", text.value); } };
  maskSel.onchange = () => { m.set("mask_params", {}); set("mask", maskSel.value); };
  slider.oninput = () => paintSparsity();
  slider.onchange = () => set("sparsity", Number(slider.value) / 100);
  paperBudget.onchange = () => set("paper_budget", paperBudget.checked);
  layer.oninput = () => { layerLabel.textContent = `L${layer.value}`; };
  layer.onchange = () => set("layer", Number(layer.value));
  headSel.onchange = () => set("head", Number(headSel.value));
  sortSel.onchange = () => { gallery = null; paintGallery(); };
  positionInput.onchange = () => set("position", Number(positionInput.value));
  perLayer.onchange = () => set("per_layer", perLayer.checked);
  timeAttention.onchange = () => set("time_attention", timeAttention.checked);
  // the estimate follows the typing, so that nothing moves under the pointer when the input loses focus on a click
  adaptSteps.oninput = () => paintAdapt();
  adaptSteps.onchange = () => { set("adapt_steps", Math.max(1, Math.round(Number(adaptSteps.value) || 1))); paintAdapt(); };
  adaptButton.onclick = () => {
    performance.mark("attnsparse:intent:adapt");
    const request: AdaptMessage = { type: "adapt" };
    m.send(request);
  };
  cancelButton.onclick = () => { const request: CancelAdaptMessage = { type: "cancel_adapt" }; m.send(request); };
  showSel.onchange = () => set("compare_with", showSel.value);
  gifButton.onclick = () => {
    performance.mark("attnsparse:intent:export");
    const request: ExportGifMessage = { type: "export_gif" };
    m.send(request);
  };
  pngButton.onclick = () => {
    const v = view;
    const name = `attnsparse-L${v?.layer ?? 0}${v && v.head >= 0 ? `H${v.head}` : ""}-${m.get("mask")}`;
    Plotly.downloadImage(mainPlot, { format: "png", filename: name, width: width(), height: mainPlot.clientHeight || 480, scale: 2 });
  };
  // a file the kernel made (the GIF) arrives as a custom message with its bytes: hand it to the browser
  m.on("msg:custom", (content: unknown, buffers: DataView[]) => {
    const msg = content as Partial<DownloadMessage> | null | undefined;
    if (msg?.type !== "download" || !buffers?.length) return;
    const b = buffers[0];
    const blob = new Blob([new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice()], { type: msg.mime ?? "application/octet-stream" });
    const a = h("a", { href: URL.createObjectURL(blob), download: msg.filename ?? "attnsparse.gif" });
    root.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  });

  function paintCatalog() {
    maskSel.replaceChildren();
    for (const info of m.get("catalog") ?? []) {
      maskSel.appendChild(h("option", { value: info.id, title: info.paper }, `${info.id} — ${info.description}`));
    }
    maskSel.value = m.get("mask");
  }

  function paintParams() {
    const info = (m.get("catalog") ?? []).find((c) => c.id === m.get("mask"));
    params.replaceChildren();
    if (!info) return;
    maskPaper.textContent = info.paper;
    const shown = infoOf();
    const applied = shown.mask === info.id ? (shown.mask_params ?? {}) : {};
    const chosen = { ...applied, ...(m.get("mask_params") ?? {}) };
    for (const [name, def] of Object.entries(info.params)) {
      if (name === info.budget) {
        if (name in applied) params.appendChild(h("span", { class: "asw-param asw-budget", title: "set by the sparsity slider" }, `${name} = ${applied[name]}`));
        continue;
      }
      const input = h("input", { type: "number", value: String(chosen[name] ?? def), step: Number.isInteger(def) ? "1" : "0.01", title: `paper default ${def}`, "aria-label": name }) as HTMLInputElement;
      input.onchange = () => set("mask_params", { ...(m.get("mask_params") ?? {}), [name]: Number(input.value) });
      const lab = h("label", { class: "asw-param" }, `${name} `);
      lab.appendChild(input);
      params.appendChild(lab);
    }
    if (Object.keys(m.get("mask_params") ?? {}).length) {
      const reset = h("button", { class: "asw-reset", title: "back to the paper's defaults" }, "defaults");
      reset.onclick = () => set("mask_params", {});
      params.appendChild(reset);
    }
  }

  function paintSparsity() {
    const met = metricsOf();
    const info = infoOf();
    const achieved = met.achieved_sparsity;
    const paper = Boolean(m.get("paper_budget"));
    slider.disabled = paper;
    let textOut = paper ? `the paper's budget · achieved ${pct(achieved)}` : `requested ${slider.value}% · achieved ${pct(achieved)}`;
    const [lo, hi] = info.reachable ?? [];
    const req = Number(slider.value) / 100;
    if (!paper && typeof lo === "number" && typeof hi === "number" && (req > hi + 0.01 || req < lo - 0.01)) {
      textOut += ` (this mask reaches ${pct(lo, 0)}–${pct(hi, 0)} at ${info.n_tokens} tokens)`;
    }
    sparsityLabel.textContent = textOut;
    sparsityLabel.dataset.achieved = typeof achieved === "number" ? String(achieved) : "";
  }

  function paintControls() {
    const info = infoOf();
    layer.max = String((info.n_layers ?? 1) - 1);
    if (document.activeElement !== layer) layer.value = String(m.get("layer"));
    layerLabel.textContent = `L${m.get("layer")}`;
    const heads = info.n_heads ?? 0;
    const groups = info.n_kv_heads && info.n_kv_heads < heads ? heads / info.n_kv_heads : 1;
    if (headSel.options.length !== heads + 1) {
      headSel.replaceChildren(h("option", { value: "-1" }, "mean of heads"));
      for (let i = 0; i < heads; i++) {
        headSel.appendChild(h("option", { value: String(i) }, groups > 1 ? `H${i} (KV head ${Math.floor(i / groups)})` : `H${i}`));
      }
    }
    headSel.value = String(m.get("head"));
    if (document.activeElement !== text) text.value = m.get("text");
    if (document.activeElement !== slider) slider.value = String(Math.round(100 * m.get("sparsity")));
    maskSel.value = m.get("mask");
    positionInput.max = String(Math.max(0, (info.n_tokens ?? 1) - 1));
    perLayer.checked = Boolean(m.get("per_layer"));
    timeAttention.checked = Boolean(m.get("time_attention"));
    paperBudget.checked = Boolean(m.get("paper_budget"));
    note.textContent = info.note ?? "";
    note.style.display = info.note ? "" : "none";
    paintSparsity();
  }

  function paintAdapt() {
    const a: Partial<AdaptState> = m.get("adaptation") ?? {};
    const info = infoOf();
    adaptRow.style.display = info.causal === false ? "none" : "";
    if (document.activeElement !== adaptSteps) adaptSteps.value = String(m.get("adapt_steps"));
    const perStep = a.seconds_per_step;
    adaptEstimate.textContent = typeof perStep === "number" ? `≈ ${duration(perStep * Number(adaptSteps.value || 0))} on this machine` : "";
    const training = a.state === "training";
    adaptButton.disabled = training;
    cancelButton.style.display = training ? "" : "none";
    const current = a.mask === m.get("mask") && typeof a.sparsity === "number" && Math.abs(a.sparsity - m.get("sparsity")) < 1e-9;
    let textOut = "";
    if (training) {
      textOut = a.phase === "samples" ? "the model is writing its own training texts…"
        : `step ${a.done ?? 0}/${a.steps ?? "?"}${typeof a.loss === "number" ? ` · loss ${a.loss.toFixed(4)}` : ""} · ${duration(a.elapsed ?? 0)}`;
    } else if (a.state === "ready") {
      textOut = current
        ? `adapted: ${a.steps} steps${a.from_cache ? " (from the cache)" : ` in ${duration(a.elapsed ?? 0)}`}`
        : `adapters were trained for ${a.mask} at ${pct(a.sparsity, 0)}: press Adapt for this mask`;
    } else if (a.state === "cancelled") {
      textOut = "cancelled: nothing was kept";
    } else if (a.state === "failed") {
      textOut = `failed: ${a.error ?? ""}`;
    }
    adaptInfo.textContent = textOut;
    adaptInfo.dataset.state = a.state ?? "none";
    const hasAdapted = typeof metricsOf().adapted_ppl === "number";
    showSel.disabled = !hasAdapted;
    showSel.value = hasAdapted ? m.get("compare_with") : "sparse";
  }

  let timer: ReturnType<typeof setInterval> | undefined;
  function paintStatus() {
    const s: Partial<Status> = m.get("status") ?? {};
    error.textContent = s.error ? `⚠ ${s.error}` : "";
    error.style.display = s.error ? "" : "none";
    root.dataset.busy = s.busy ? "1" : "0";
    root.dataset.request = String(s.request ?? 0);
    if (timer) clearInterval(timer);
    timer = undefined;
    const curve = s.stage === "per-layer curve";
    const tick = () => {
      const secs = ((Date.now() - (s.started ?? Date.now())) / 1000).toFixed(1);
      const done = s.progress;
      busy.textContent = s.busy ? `${s.stage}${typeof done === "number" ? ` ${Math.round(100 * done)}%` : ""} · ${secs} s` : "";
    };
    tick();
    if (s.busy) timer = setInterval(tick, 200);
    progress.textContent = s.busy && curve
      ? `per-layer curve: ${Math.round(100 * (s.progress ?? 0))}% (a replayed forward pass per layer, filling in as it goes)` : "";
  }

  // ------------------------------------------------------------------------------------------------ painters
  function paintMain(): Promise<void> {
    const info = infoOf();
    const v = view;
    if (!v?.figure || !info) return Promise.resolve();
    const w = width();
    const side = 0.28 * w; // about one panel's width: make the panels about square
    const drawn = draw(mainPlot, v.figure, w, Math.round(Math.min(720, Math.max(320, side + 140))));
    drops.replaceChildren();
    const heavy = v.drops ?? [];
    if (heavy.length) {
      drops.appendChild(h("span", {}, "heaviest dropped pairs (dense weight): "));
      const name = (p: number) => (v.factor > 1 ? `${p}…` : JSON.stringify(visibleToken(tokensOf()[p] ?? "")));
      heavy.forEach((d, i) => drops.appendChild(h("span", { class: "asw-drop" }, `${i ? " · " : ""}${name(d.q)} → ${name(d.k)} ${weightText(d.w)}`)));
    } else {
      drops.textContent = "no pair with dense weight was dropped in this view";
    }
    return drawn;
  }

  function paintMask(): Promise<void> {
    const info = infoOf();
    const met = metricsOf();
    if (!view?.mask_figure || !info) return Promise.resolve();
    const w = Math.min(width(), 620);
    const drawn = draw(maskPlot, view.mask_figure, w, w);
    const perHead = met.achieved_sparsity_per_head?.[view.layer] ?? [];
    const spread = perHead.length ? ` Achieved at layer ${view.layer}, per head: ${perHead.map((s) => pct(s, 0)).join(" ")}.` : "";
    maskInfo.textContent = `The keep-pattern at layer ${view.layer} (${view.head < 0 ? "fraction of heads keeping each pair" : `head ${view.head}`}); ` +
      `dark = kept, light = dropped, white = never allowed. Reachable sparsity at ${info.n_tokens} tokens: ` +
      `${pct(info.reachable?.[0], 0)} – ${pct(info.reachable?.[1], 0)}.${spread}`;
    timeInfo.textContent = timeText(met);
    return drawn;
  }

  function paintGallery(): Promise<void> {
    const g = m.get("gallery");
    if (!filled(g) || !g.dense) return Promise.resolve();
    if (!gallery || gallery.g !== g) {
      const order = galleryOrder(g, sortSel.value as SortKey);
      gallery = { g, order, dense: restitch(decodeMatrix(g.dense), g, order), sparse: restitch(decodeMatrix(g.sparse), g, order) };
    }
    const w = width();
    const pitch = g.cell + 1;
    const cellPx = (0.49 * w - 8) / (g.n_heads * pitch);
    const hgt = Math.round(Math.min(4000, g.n_layers * pitch * cellPx + 40)); // + the margins: square cells
    galleryPlot.dataset.order = JSON.stringify(gallery.order.slice(0, 5));
    return draw(galleryPlot, galleryFigure(gallery.dense, gallery.sparse, g, gallery.order, sortSel.value as SortKey), w, hgt);
  }

  function paintOutput(): Promise<void> {
    const met = metricsOf();
    const info = infoOf();
    headline.replaceChildren();
    // the view comes first: a language model's next-token metrics follow as a stage of their own
    const coming = info.causal !== false && typeof met.sparse_ppl !== "number" && !!(m.get("status") as Status | undefined)?.busy;
    const later = (text: string) => (coming ? "…" : text);
    const cells: [string, string, string][] = [
      ["perplexity dense", later(fmt(met.dense_ppl)), "exp of the mean next-token NLL, dense attention"],
      ["perplexity sparse", later(fmt(met.sparse_ppl)), "the same with the sparse mask at every layer"],
      ["Δ perplexity", later(fmt(met.delta_ppl)), "sparse − dense"],
      ["sparsity achieved", pct(met.achieved_sparsity), "fraction of allowed query-key pairs dropped"],
      ["next-token KL", later(fmt(met.next_token_kl, 4)), "KL(dense ‖ sparse) of the next-token distribution, mean over positions"],
      ["top-1 agreement", later(pct(met.top1_agreement)), "positions where both predict the same next token"],
    ];
    if (typeof met.adapted_ppl === "number") {
      cells.splice(2, 0,
        ["perplexity adapted", fmt(met.adapted_ppl), "the adapted model (LoRA trained under the mask) with the same mask"],
        ["recovered", pct(met.recovered, 0), "the fraction of the perplexity gap the adaptation won back: (sparse − adapted) / (sparse − dense)"]);
    }
    for (const [k, val, tip] of cells) {
      const d = h("div", { class: "asw-metric", title: tip });
      d.append(h("span", {}, k), h("b", { "data-metric": k }, val));
      headline.appendChild(d);
    }
    const chart = m.get("layer_chart");
    const fig = filled(chart) && chart.data ? decodeTree(chart) : null;
    layerPlot.style.display = fig ? "" : "none";
    const drawn = fig ? draw(layerPlot, fig, width(), 340) : Promise.resolve();
    conts.replaceChildren();
    const toks = met.continuation_tokens ?? {};
    if (toks.dense && toks.sparse) {
      const dense = toks.dense;
      const split = firstDivergence(dense, toks.sparse);
      const table = h("div", { class: "asw-cont-grid" });
      const regimes: [string, string[]][] = [["dense", dense], ["sparse", toks.sparse]];
      if (toks.adapted) regimes.push(["adapted", toks.adapted]);
      for (const [name, regime] of regimes) {
        const box = h("div", { class: "asw-cont", "data-regime": name });
        box.appendChild(h("b", {}, `${name} continuation`));
        const line = h("div", { class: "asw-cont-text" });
        const own = name === "dense" ? split : firstDivergence(dense, regime); // where this one leaves the dense one
        regime.forEach((t, i) => line.appendChild(h("span", { class: i === own ? "asw-diverge" : i > own ? "asw-after" : "" }, visibleToken(t))));
        box.appendChild(line);
        table.appendChild(box);
      }
      conts.appendChild(table);
      conts.appendChild(h("div", { class: "asw-hint" }, split < Math.max(toks.dense.length, toks.sparse.length)
        ? `greedy decoding; the continuations part at token ${split + 1} (highlighted)` : "greedy decoding; the continuations are identical"));
    } else if (info.causal === false) {
      conts.textContent = "an encoder has no next-token head: perplexity and continuations do not apply";
    }
    const shown: Partial<NextTokenView> = m.get("next_tokens") ?? {};
    const next = shown.top;
    nextTok.replaceChildren();
    if (next && shown.position !== undefined) {
      if (document.activeElement !== positionInput) positionInput.value = String(shown.position);
      nextTok.appendChild(h("div", {}, `after position ${shown.position} (${JSON.stringify(visibleToken(tokensOf()[shown.position] ?? ""))}):`));
      const both = new Set(next.dense.map(([t]) => t).filter((t) => next.sparse.some(([s]) => s === t)));
      const table = h("table");
      for (const name of ["dense", "sparse", "adapted"] as const) {
        const top = next[name];
        if (!top) continue;
        const tr = h("tr");
        tr.appendChild(h("th", {}, name));
        for (const [tok, p] of top) {
          tr.appendChild(h("td", { class: both.has(tok) ? "asw-shared" : "" }, `${JSON.stringify(visibleToken(tok))} ${(100 * p).toFixed(1)}%`));
        }
        table.appendChild(tr);
      }
      nextTok.appendChild(table);
    }
    return drawn;
  }

  // ------------------------------------------------------------------------------- plots report intent back
  const showTip = (ev: PlotlyEvent, lines: string[]) => {
    tooltip.replaceChildren(...lines.map((l) => h("div", {}, l)));
    const box = root.getBoundingClientRect();
    const e = ev?.event;
    if (!e) return;
    tooltip.style.left = `${e.clientX - box.left + 14}px`;
    tooltip.style.top = `${e.clientY - box.top + 14}px`;
    tooltip.style.display = "block";
  };
  const hideTip = () => { tooltip.style.display = "none"; };
  const on = <E,>(p: HTMLElement, name: string, fn: (ev: E) => void) => (p as PlotElement).on(name, fn);
  wiring.set(mainPlot, () => {
    on(mainPlot, "plotly_hover", (ev: PlotlyEvent) => {
      const pt = ev?.points?.[0];
      const idx = pt?.pointNumber ?? pt?.pointIndex;
      if (cells && Array.isArray(idx)) showTip(ev, cellInfo(cells, tokensOf(), idx[0], idx[1]));
    });
    on(mainPlot, "plotly_unhover", hideTip);
    on(mainPlot, "plotly_click", (ev: PlotlyEvent) => { const pt = ev?.points?.[0]; if (pt && typeof pt.y === "number") set("position", pt.y); });
    on(mainPlot, "plotly_relayout", (ev: RelayoutEvent) => {
      if (ev["xaxis.autorange"] || ev["yaxis.autorange"] || ev["xaxis2.autorange"] || ev["xaxis3.autorange"]) { set("zoom", []); return; }
      const xr = ["xaxis", "xaxis2", "xaxis3"].map((a) => [ev[`${a}.range[0]`], ev[`${a}.range[1]`]]).find(([a]) => typeof a === "number");
      const y0 = ev["yaxis.range[0]"], y1 = ev["yaxis.range[1]"];
      const factor = view?.factor ?? 1;
      if (xr && typeof y0 === "number" && typeof y1 === "number") {
        const [x0, x1] = xr as [number, number];
        set("zoom", [Math.floor(Math.min(y0, y1)), Math.ceil(Math.max(y0, y1)) + factor, Math.floor(Math.min(x0, x1)), Math.ceil(Math.max(x0, x1)) + factor]);
      }
    });
  });
  // the gallery slot under a hovered or clicked point
  const slotOf = (ev: PlotlyEvent) => {
    const pt = ev?.points?.[0];
    return gallery && pt && typeof pt.x === "number" && typeof pt.y === "number" ? slotAt(pt.x, pt.y, gallery.g, gallery.order) : null;
  };
  wiring.set(galleryPlot, () => {
    on(galleryPlot, "plotly_hover", (ev: PlotlyEvent) => {
      const slot = slotOf(ev);
      if (slot && gallery) showTip(ev, slotInfo(gallery.g, slot)); else hideTip();
    });
    on(galleryPlot, "plotly_unhover", hideTip);
    on(galleryPlot, "plotly_click", (ev: PlotlyEvent) => {
      const slot = slotOf(ev);
      if (slot) { hideTip(); m.set("layer", slot[0]); set("head", slot[1]); select("main"); }
    });
  });
  wiring.set(layerPlot, () => on(layerPlot, "plotly_click", (ev: PlotlyEvent) => {
    const pt = ev?.points?.[0];
    if (pt && typeof pt.x === "number") { set("layer", pt.x); select("main"); }
  }));

  // -------------------------------------------------------------------------------------- trait → painters
  const onView = () => {
    performance.mark("attnsparse:view-arrived");
    const sent = m.get("view");
    view = filled(sent) && sent.figure ? withDenseMap(decodeTree(sent), m.get("dense_map")) : null;
    cells = view ? cellsOf(view) : null;
    exploreButton.disabled = !view;
    // tell the kernel once this is on screen: it waits (briefly) before its next stage takes every core
    const painted: PaintedMessage = { type: "painted" };
    invalidate("main", "mask", "output").then(() => requestAnimationFrame(() => m.send(painted)));
  };
  m.on("change:catalog", () => { paintCatalog(); paintParams(); });
  m.on("change:mask", () => { paintParams(); paintControls(); });
  m.on("change:mask_params", paintParams);
  m.on("change:info", () => { paintParams(); paintControls(); gallery = null; });
  // the view and its dense values change in one message (two events): one repaint for both
  let viewQueued = false;
  const queueView = () => {
    if (viewQueued) return;
    viewQueued = true;
    queueMicrotask(() => { viewQueued = false; onView(); });
  };
  m.on("change:view", queueView);
  m.on("change:dense_map", queueView);
  m.on("change:metrics", () => { paintSparsity(); paintAdapt(); invalidate("output", "mask"); });
  m.on("change:adaptation", paintAdapt);
  for (const name of ["adapt_steps", "compare_with", "mask", "sparsity"] as const) m.on(`change:${name}`, paintAdapt);
  m.on("change:gallery", () => { performance.mark("attnsparse:gallery-arrived"); invalidate("gallery"); });
  m.on("change:layer_chart", () => invalidate("output"));
  m.on("change:next_tokens", () => invalidate("output"));
  m.on("change:status", paintStatus);
  for (const name of ["text", "sparsity", "layer", "head", "per_layer"] as const) m.on(`change:${name}`, paintControls);
  m.on("change:paper_budget", () => { paintControls(); paintSparsity(); });
  m.on("change:explorer", () => void paintCost());

  paintCatalog();
  paintParams();
  paintControls();
  paintStatus();
  paintAdapt();
  onView();
  void paintCost();
  select("main");

  // the output area may be laid out after render (or resized later): repaint the visible pane at the new width
  let lastWidth = 0;
  let pending: ReturnType<typeof setTimeout> | undefined;
  const resize = new ResizeObserver(() => {
    const w = width();
    if (Math.abs(w - lastWidth) < 8) return;
    lastWidth = w;
    clearTimeout(pending);
    pending = setTimeout(() => { for (const k of Object.keys(stale) as Pane[]) stale[k] = true; paint(current); }, 100);
  });
  resize.observe(root);
  return () => {
    resize.disconnect();
    explorerView?.abort();
    clearTimeout(pending);
    if (timer) clearInterval(timer);
    for (const p of [mainPlot, galleryPlot, layerPlot, maskPlot]) Plotly.purge(p);
  };
}

/** One bundle, two widgets: the cost explorer (its `_kind` trait) or the comparison view. */
function renderAny(props: RenderProps<WidgetState>) {
  const kind = (props.model as unknown as AnyModel<{ _kind?: string }>).get("_kind");
  if (kind === "cost-explorer") return renderExplorer(props.model as unknown as AnyModel<ExplorerState>, props.el);
  return render(props);
}

export default { render: renderAny };
