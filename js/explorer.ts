// The cost explorer's frontend (src/attnsparse_widget/explorer.py): controls that set `settings`, the kernel's SVG
// picture of one attention layer (pan with a drag, zoom with the wheel, click a tensor or an op), and the details
// of what was clicked: its numbers, its roofline on each accelerator, and for the ops that have one the batch's
// mask, FlashAttention's tiles, the paged block table, the TP and DP splits, MLA's crossover chart.
// The kernel does every count (src/attnsparse_widget/costs/); nothing here computes a cost.
import Plotly from "plotly.js-cartesian-dist-min";
import type { AnyModel } from "@anywidget/types";
import type { ExplorerGraph, ExplorerSettings, ExplorerState, Figure } from "./contract";
import { decodeMatrix } from "./payload";
import { ACCELERATORS, batchPreset, crossoverFigure, DTYPES, formatRequests, matrixFigure, opRows, panBy, parseRequests, PRESETS,
  ranksFigure, rooflineFigure, si, MASKS, tensorRows, totalsRows, VARIANTS, zoomAt, type Box } from "./explorer_figures";

function hasGraph(g: ExplorerGraph | Record<string, never>): g is ExplorerGraph {
  return "ops" in g;
}

// ------------------------------------------------------------------------------------------------ the view
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (tag === "input" || tag === "select" || tag === "textarea") el.setAttribute("data-lm-suppress-shortcuts", "true");
  if (text !== undefined) el.textContent = text;
  return el;
}

function table(rows: [string, string][]): HTMLTableElement {
  const t = h("table", { class: "asx-table" });
  for (const [k, v] of rows) {
    const tr = h("tr");
    tr.append(h("th", {}, k), h("td", {}, v));
    t.append(tr);
  }
  return t;
}

export function renderExplorer(m: AnyModel<ExplorerState>, el: HTMLElement): () => void {
  const root = h("div", { class: "asw-root asx-root" });
  el.appendChild(root);
  const controls = h("div", { class: "asx-controls" });
  const error = h("div", { class: "asw-error asx-error" });
  const totals = h("div", { class: "asx-totals" });
  const canvas = h("div", { class: "asx-canvas" });
  const details = h("div", { class: "asx-details" });
  root.append(controls, error, totals, canvas, details);

  const settings = (): ExplorerSettings => m.get("settings");
  const set = (patch: Partial<ExplorerSettings>) => {
    m.set("settings", { ...settings(), ...patch });
    m.save_changes();
  };

  // ------------------------------------------------------------------------------------------- controls
  const inputs = new Map<keyof ExplorerSettings, HTMLInputElement | HTMLSelectElement>();
  const field = (label: string, key: keyof ExplorerSettings, control: HTMLInputElement | HTMLSelectElement) => {
    const wrap = h("label", { class: `asx-field asx-${String(key)}` });
    wrap.append(h("span", {}, label), control);
    controls.append(wrap);
    inputs.set(key, control);
    return control;
  };
  const select = (label: string, key: keyof ExplorerSettings, options: string[], names: string[] = options) => {
    const s = h("select");
    options.forEach((o, i) => s.append(Object.assign(h("option", { value: o }, names[i] || "none"))));
    field(label, key, s).addEventListener("change", () => set({ [key]: s.value } as Partial<ExplorerSettings>));
    return s;
  };
  const number = (label: string, key: keyof ExplorerSettings, min = 0) => {
    const i = h("input", { type: "number", min: String(min), step: "1" });
    field(label, key, i).addEventListener("change", () => {
      const v = Math.round(Number(i.value));
      if (Number.isFinite(v) && v >= min) set({ [key]: v } as Partial<ExplorerSettings>);
    });
    return i;
  };
  const check = (label: string, key: keyof ExplorerSettings) => {
    const i = h("input", { type: "checkbox" });
    field(label, key, i).addEventListener("change", () => set({ [key]: i.checked } as Partial<ExplorerSettings>));
    return i;
  };
  select("model", "preset", [...PRESETS, "custom", settings().preset].filter((v, i, a) => a.indexOf(v) === i));
  select("variant", "variant", VARIANTS);
  number("n_h", "heads", 1); number("n_kv", "kv_heads", 1); number("d_h", "head_dim", 1); number("d", "hidden", 1);
  number("layers", "layers", 1);
  number("q_lora", "q_lora_rank", 0); number("kv_lora (L)", "kv_lora_rank", 1); number("nope (P)", "qk_nope", 1);
  number("rope (R)", "qk_rope", 1); number("v (V)", "v_head", 1);
  number("indexer heads", "index_heads", 1); number("indexer d", "index_head_dim", 1); number("top-k", "index_topk", 1);
  const requests = h("input", { type: "text", class: "asx-requests-text", title: "context:new per request, e.g. 8192:8192, 8192:1 x4" });
  const reqWrap = h("label", { class: "asx-field asx-requests" });
  reqWrap.append(h("span", {}, "requests (context:new)"), requests);
  controls.append(reqWrap);
  requests.addEventListener("change", () => {
    const parsed = parseRequests(requests.value);
    requests.classList.toggle("asx-bad", parsed === null);
    if (parsed) set({ requests: parsed });
  });
  for (const kind of ["prefill", "decode", "mixed"] as const) {
    const b = h("button", { class: `asx-batch asx-batch-${kind}` }, { prefill: "one prefill", decode: "decode batch", mixed: "mixed batch" }[kind]);
    b.addEventListener("click", () => set({ requests: batchPreset(kind, Math.max(...settings().requests.map((r) => r[0]))) }));
    controls.append(b);
  }
  select("dtype", "dtype", DTYPES);
  number("TP", "tp", 1); number("DP", "dp", 1);
  check("FlashAttention", "flash");
  const tileInputs = [0, 1].map((axis) => {
    const i = h("input", { type: "number", min: "1", step: "1", class: `asx-tile-${axis ? "cols" : "rows"}` });
    i.addEventListener("change", () => {
      const v = Math.round(Number(i.value));
      const tile = [...settings().tile];
      if (Number.isFinite(v) && v >= 1) { tile[axis] = v; set({ tile }); }
    });
    return i;
  });
  const tileWrap = h("label", { class: "asx-field asx-tile" });
  tileWrap.append(h("span", {}, "tile B_r x B_c"), tileInputs[0], tileInputs[1]);
  controls.append(tileWrap);
  number("page size (0: off)", "page_size", 0); number("window (0: off)", "window", 0); number("top-k (0: off)", "topk", 0);
  select("accelerator", "accelerator", ACCELERATORS);
  select("MLA pipeline", "pipeline", ["auto", "prefill", "decode"], ["cheaper", "decompressed (prefill)", "absorbed (decode)"]);
  const maskOptions = [...(settings().mask === "realised" ? ["realised"] : []), "", ...MASKS.filter((id) => id !== "dense")];
  select("mask", "mask", maskOptions, maskOptions.map((o) => (o === "realised" ? "the comparison's realised mask" : o || "none (causal)")));
  const sparsity = h("input", { type: "range", min: "0", max: "0.99", step: "0.01" });
  field("sparsity", "sparsity", sparsity).addEventListener("change", () => set({ sparsity: Number(sparsity.value) }));

  const syncControls = () => {
    const s = settings();
    for (const [key, control] of inputs) {
      const v = s[key];
      if (control instanceof HTMLInputElement && control.type === "checkbox") control.checked = Boolean(v);
      else if (document.activeElement !== control) control.value = String(v);
    }
    if (document.activeElement !== requests) requests.value = formatRequests(s.requests);
    tileInputs.forEach((i, axis) => { if (document.activeElement !== i) i.value = String(s.tile[axis]); });
    tileWrap.hidden = !s.flash;
    const mla = s.variant === "MLA" || s.variant === "DSA";
    for (const key of ["q_lora_rank", "kv_lora_rank", "qk_nope", "qk_rope", "v_head", "pipeline"] as const) inputs.get(key)!.parentElement!.hidden = !mla;
    for (const key of ["index_heads", "index_head_dim", "index_topk"] as const) inputs.get(key)!.parentElement!.hidden = s.variant !== "DSA";
    inputs.get("kv_heads")!.parentElement!.hidden = s.variant !== "GQA";
    inputs.get("sparsity")!.parentElement!.hidden = !s.mask || s.mask === "realised";
  };

  // ------------------------------------------------------------------------------------- the picture
  let box: Box | null = null;
  let shownFull: Box | null = null; // the whole picture's viewBox
  let drag: { x: number; y: number; moved: boolean } | null = null;
  const svgOf = () => canvas.querySelector("svg");
  const applyBox = () => { const svg = svgOf(); if (svg && box) svg.setAttribute("viewBox", box.join(" ")); };
  canvas.addEventListener("wheel", (ev) => {
    const svg = svgOf();
    if (!svg || !box) return;
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const px = box[0] + ((ev.clientX - r.left) / Math.max(1, r.width)) * box[2];
    const py = box[1] + ((ev.clientY - r.top) / Math.max(1, r.height)) * box[3];
    box = zoomAt(box, ev.deltaY < 0 ? 1.2 : 1 / 1.2, px, py);
    applyBox();
  }, { passive: false });
  canvas.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, moved: false }; });
  canvas.addEventListener("pointermove", (ev) => {
    if (!drag || !box) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (!drag.moved) return;
    box = panBy(box, dx, dy, canvas.getBoundingClientRect().width);
    drag.x = ev.clientX; drag.y = ev.clientY;
    applyBox();
  });
  canvas.addEventListener("pointerup", (ev) => {
    const moved = drag?.moved;
    drag = null;
    if (moved) return;
    const target = (ev.target as Element).closest("[data-id]");
    if (target) set({ selected: target.getAttribute("data-id") ?? "" });
  });

  const plots: HTMLElement[] = [];
  const plot = (fig: Figure, cls: string) => {
    const div = h("div", { class: `asx-plot ${cls}` });
    details.append(div);
    plots.push(div);
    void Plotly.react(div, fig.data, { ...fig.layout, width: 460, height: 300 }, { displaylogo: false, responsive: false });
  };

  const paintDetails = (g: ExplorerGraph) => {
    for (const p of plots.splice(0)) Plotly.purge(p);
    details.replaceChildren();
    const id = settings().selected;
    const op = g.ops.find((o) => o.id === id);
    const tensor = g.tensors.find((t) => t.id === id);
    if (op) {
      details.append(h("h4", {}, op.name), table(opRows(op)));
      plot(rooflineFigure(op), "asx-roofline");
      if (op.kind === "softmax" || op.kind === "attention") {
        plot(matrixFigure(`the batch's mask: ${si(g.pairs)} pairs per head (${si(g.dense_pairs)} causal)`, decodeMatrix(g.mask), "Blues", 1), "asx-mask");
      }
      if (op.kind === "attention") {
        plot(matrixFigure(`tiles ${g.tiles.rows}x${g.tiles.cols}: ${si(g.tiles.computed)} of ${g.tiles.total} computed`, decodeMatrix(g.tiles.grid), "Greens", 100), "asx-tiles");
      }
      if (op.kind === "cache" && g.block_table.length) {
        details.append(h("h5", {}, "block table (paged KV)"), table(g.block_table.map((ids, i): [string, string] => [`request ${i}`, ids.length > 12 ? `${ids.slice(0, 12).join(" ")} … (${ids.length} blocks)` : ids.join(" ")])));
      }
      const strips = [];
      if (op.comm_bytes > 0 || g.tp_heads.length > 1) {
        details.append(h("h5", {}, "tensor parallel ranks"), table(g.tp_heads.map((heads, r): [string, string] => [`rank ${r}`, `query heads ${heads[0]}–${heads[heads.length - 1]}, ${g.pipeline ? "the whole latent KV cache (replicated)" : `${g.tp_kv_heads} KV head(s)`}`])));
        strips.push({ name: "query head", ranks: g.tp_heads });
      }
      if (g.dp_requests.length > 1) {
        details.append(h("h5", {}, "data parallel ranks"), table(g.dp_requests.map((reqs, r): [string, string] => [`rank ${r}${r === g.totals.dp_rank ? " (busiest: shown)" : ""}`, reqs.length ? `requests ${reqs.join(", ")}` : "idle"])));
        strips.push({ name: "request", ranks: g.dp_requests });
      }
      if (strips.length) plot(ranksFigure(`TP ${g.tp_heads.length} x DP ${g.dp_requests.length}: which rank computes what`, strips), "asx-ranks");
    } else if (tensor) {
      details.append(h("h4", {}, tensor.name), table(tensorRows(tensor)));
    } else {
      details.append(h("div", { class: "asw-hint" }, "Click a tensor or an operation for its numbers."));
    }
    if (g.crossover.length) plot(crossoverFigure(g.crossover, g.crossover_at), "asx-crossover");
  };

  const paintTotals = (g: ExplorerGraph) => {
    totals.replaceChildren(h("div", { class: "asx-title" }, g.title), table(totalsRows(g, settings().accelerator)));
  };

  /** The clicked tensor or op marked in the picture, and its details. */
  const paintSelection = (g: ExplorerGraph) => {
    canvas.querySelectorAll(".asx-selected").forEach((n) => n.classList.remove("asx-selected"));
    canvas.querySelector(`[data-id="${settings().selected}"]`)?.classList.add("asx-selected");
    paintDetails(g);
  };

  let shownSvg = "";
  let shownSelection = settings().selected;
  const paint = () => {
    syncControls();
    error.textContent = m.get("error");
    error.hidden = !m.get("error");
    const g = m.get("graph");
    if (!hasGraph(g)) return;
    performance.mark("attnsparse:explorer:start");
    if (g.svg !== shownSvg) {
      canvas.innerHTML = g.svg; // the kernel's own SVG (cost_svg.py escapes every text in it)
      shownSvg = g.svg;
      const svg = svgOf()!;
      const full = (svg.getAttribute("viewBox") ?? "0 0 800 400").split(" ").map(Number) as Box;
      // a picture of the same size keeps the user's pan and zoom; another one is shown whole
      box = box && shownFull && full.every((v, i) => v === shownFull![i]) ? box : full;
      shownFull = full;
      svg.removeAttribute("width"); svg.removeAttribute("height");
      svg.style.width = "100%"; svg.style.height = "auto"; // the picture's own aspect, as wide as the output
      applyBox();
    }
    paintTotals(g);
    paintSelection(g);
    root.dataset.rendered = String(Number(root.dataset.rendered ?? 0) + 1);
    performance.mark("attnsparse:explorer:end");
  };
  m.on("change:graph", paint);
  m.on("change:error", paint);
  m.on("change:settings", () => {
    syncControls();
    const g = m.get("graph");
    if (hasGraph(g) && settings().selected !== shownSelection) {
      shownSelection = settings().selected; // a click: the costs stay, the details change
      paintSelection(g);
    }
  });
  paint();
  return () => { for (const p of plots) Plotly.purge(p); };
}
