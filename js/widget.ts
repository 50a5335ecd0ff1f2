// attnsparse-widget frontend: renders what the kernel computed and reports intent by setting input traits.
import Plotly from "plotly.js-cartesian-dist-min";
import type { AnyModel, RenderProps } from "@anywidget/types";
import { decodeMatrix, type MatrixPayload } from "./payload";
import { firstDivergence, layerFigure, mainFigure, maskFigure, plotlySafe, type Figure, type View } from "./figures";
import { galleryOrder, restitch, slotAt, type GalleryPayload, type SortKey } from "./gallery";
import "./widget.css";

type Model = AnyModel<Record<string, any>>;
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"] };

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

function decodeView(v: Record<string, any>): View {
  return {
    dense: decodeMatrix(v.dense as MatrixPayload),
    sparse: decodeMatrix(v.sparse as MatrixPayload),
    keep: decodeMatrix(v.keep as MatrixPayload),
    allowed: decodeMatrix(v.allowed as MatrixPayload),
    region: v.region,
    factor: v.factor,
  };
}

function draw(el: HTMLElement, fig: Figure, counter: string) {
  performance.mark(`attnsparse:${counter}:start`);
  return Plotly.react(el, fig.data, fig.layout, CONFIG).then(() => {
    el.dataset[counter] = String(Number(el.dataset[counter] ?? 0) + 1);
    performance.mark(`attnsparse:${counter}:end`);
  });
}

function render({ model, el }: RenderProps<Record<string, any>>) {
  const m = model as Model;
  const root = h("div", { class: "asw-root" });
  el.appendChild(root);

  const caveat = h("div", { class: "asw-caveat" }, m.get("caveat"));
  const controls = h("div", { class: "asw-controls" });
  const text = h("textarea", { class: "asw-text", rows: "3", "aria-label": "input text" }) as HTMLTextAreaElement;
  const run = h("button", { class: "asw-run" }, "Run text");
  const maskSel = h("select", { class: "asw-mask", "aria-label": "mask" }) as HTMLSelectElement;
  const maskDesc = h("div", { class: "asw-mask-desc" });
  const slider = h("input", { type: "range", min: "0", max: "99", step: "1", class: "asw-sparsity", "aria-label": "sparsity" }) as HTMLInputElement;
  const sparsityLabel = h("span", { class: "asw-sparsity-label" });
  const params = h("div", { class: "asw-params" });
  const layer = h("input", { type: "range", min: "0", max: "0", step: "1", class: "asw-layer", "aria-label": "layer" }) as HTMLInputElement;
  const layerLabel = h("span", { class: "asw-layer-label" });
  const headSel = h("select", { class: "asw-head", "aria-label": "head" }) as HTMLSelectElement;
  const busy = h("span", { class: "asw-busy" });
  const error = h("div", { class: "asw-error" });

  const row = (...kids: HTMLElement[]) => { const r = h("div", { class: "asw-row" }); r.append(...kids); return r; };
  controls.append(
    row(text, run),
    row(h("label", {}, "mask"), maskSel, maskDesc),
    row(h("label", {}, "sparsity"), slider, sparsityLabel, params),
    row(h("label", {}, "layer"), layer, layerLabel, h("label", {}, "head"), headSel, busy),
  );

  const tabs = h("div", { class: "asw-tabs" });
  const panes: Record<string, HTMLElement> = {};
  const tabNames = [["main", "Dense vs sparse"], ["gallery", "Head gallery"], ["output", "Output shift"], ["mask", "Mask"]];
  for (const [key, label] of tabNames) {
    const b = h("button", { class: "asw-tab", "data-tab": key }, label);
    b.onclick = () => select(key);
    tabs.appendChild(b);
    panes[key] = h("div", { class: "asw-pane", "data-pane": key });
  }
  const mainPlot = h("div", { class: "asw-plot asw-main" });
  panes.main.append(mainPlot);
  const sortSel = h("select", { class: "asw-sort", "aria-label": "gallery order" }) as HTMLSelectElement;
  for (const [v, l] of [["grid", "layer × head grid"], ["kl", "most changed first (KL)"], ["mass_lost", "most mass lost first"]]) {
    sortSel.appendChild(h("option", { value: v }, l));
  }
  const galleryPlot = h("div", { class: "asw-plot asw-gallery" });
  panes.gallery.append(row(h("label", {}, "order"), sortSel), galleryPlot);
  const headline = h("div", { class: "asw-headline" });
  const layerPlot = h("div", { class: "asw-plot asw-layers" });
  const progress = h("div", { class: "asw-progress" });
  const conts = h("div", { class: "asw-continuations" });
  const nextTok = h("div", { class: "asw-next" });
  panes.output.append(headline, progress, layerPlot, conts, nextTok);
  const maskPlot = h("div", { class: "asw-plot asw-maskplot" });
  const maskInfo = h("div", { class: "asw-mask-info" });
  panes.mask.append(maskInfo, maskPlot);
  root.append(caveat, controls, error, tabs, ...Object.values(panes));

  let current = "main";
  function select(key: string) {
    current = key;
    for (const [k, p] of Object.entries(panes)) p.style.display = k === key ? "" : "none";
    for (const b of Array.from(tabs.children)) b.classList.toggle("active", (b as HTMLElement).dataset.tab === key);
    refresh();
  }

  const set = (name: string, value: unknown) => { m.set(name, value); m.save_changes(); };
  run.onclick = () => set("text", text.value);
  maskSel.onchange = () => { set("mask_params", {}); set("mask", maskSel.value); };
  slider.oninput = () => { sparsityLabel.dataset.requested = slider.value; paintSparsity(); };
  slider.onchange = () => set("sparsity", Number(slider.value) / 100);
  layer.oninput = () => { layerLabel.textContent = `L${layer.value}`; };
  layer.onchange = () => set("layer", Number(layer.value));
  headSel.onchange = () => set("head", Number(headSel.value));
  sortSel.onchange = () => paintGallery();

  function paintCatalog() {
    maskSel.replaceChildren();
    for (const info of m.get("catalog") ?? []) {
      const o = h("option", { value: info.id, title: info.description }, `${info.id} — ${info.description}`);
      maskSel.appendChild(o);
    }
    maskSel.value = m.get("mask");
  }

  function paintParams() {
    const info = (m.get("catalog") ?? []).find((c: any) => c.id === m.get("mask"));
    params.replaceChildren();
    if (!info) return;
    maskDesc.textContent = info.paper;
    const chosen = { ...(m.get("info")?.mask_params ?? {}), ...(m.get("mask_params") ?? {}) };
    for (const [name, def] of Object.entries(info.params as Record<string, number>)) {
      if (name === info.budget) continue; // the sparsity slider sets the budget
      const input = h("input", { type: "number", value: String(chosen[name] ?? def), step: Number.isInteger(def) ? "1" : "0.01", title: `default ${def}` }) as HTMLInputElement;
      input.onchange = () => set("mask_params", { ...(m.get("mask_params") ?? {}), [name]: Number(input.value) });
      const lab = h("label", { class: "asw-param" }, `${name} `);
      lab.appendChild(input);
      params.appendChild(lab);
    }
  }

  function paintSparsity() {
    const req = Number(slider.value);
    const achieved = m.get("metrics")?.achieved_sparsity;
    sparsityLabel.textContent = `requested ${req}% · achieved ${typeof achieved === "number" ? (100 * achieved).toFixed(1) + "%" : "…"}`;
    sparsityLabel.dataset.achieved = typeof achieved === "number" ? String(achieved) : "";
  }

  function paintInfo() {
    const info = m.get("info") ?? {};
    const n = info.n_layers ?? 1;
    layer.max = String(n - 1);
    layer.value = String(m.get("layer"));
    layerLabel.textContent = `L${m.get("layer")}`;
    const heads = info.n_heads ?? 0;
    if (headSel.options.length !== heads + 1) {
      headSel.replaceChildren(h("option", { value: "-1" }, "mean of heads"));
      for (let i = 0; i < heads; i++) headSel.appendChild(h("option", { value: String(i) }, `H${i}`));
    }
    headSel.value = String(m.get("head"));
    if (document.activeElement !== text) text.value = m.get("text");
    slider.value = String(Math.round(100 * m.get("sparsity")));
    maskSel.value = m.get("mask");
  }

  let timer: ReturnType<typeof setInterval> | undefined;
  function paintStatus() {
    const s = m.get("status") ?? {};
    error.textContent = s.error ? `⚠ ${s.error}` : "";
    error.style.display = s.error ? "" : "none";
    root.dataset.busy = s.busy ? "1" : "0";
    root.dataset.request = String(s.request ?? 0);
    if (timer) clearInterval(timer);
    const tick = () => {
      const secs = ((Date.now() - (s.started ?? Date.now())) / 1000).toFixed(1);
      const pct = s.progress !== undefined && s.stage === "per-layer curve" ? ` ${Math.round(100 * s.progress)}%` : "";
      busy.textContent = s.busy ? `⏳ ${s.stage}${pct} · ${secs} s` : "";
    };
    tick();
    if (s.busy) timer = setInterval(tick, 200);
    progress.textContent = s.busy && s.stage === "per-layer curve" ? `per-layer curve: ${Math.round(100 * (s.progress ?? 0))}% (one forward pass per point)` : "";
  }

  function paintMain() {
    const v = m.get("view");
    const info = m.get("info");
    if (!v?.dense || !info) return;
    const view = decodeView(v);
    const head = v.head < 0 ? "mean of heads" : `H${v.head}`;
    const title = `L${v.layer} ${head} · ${info.mask_label}` + (v.factor > 1 ? ` · ${v.factor}×${v.factor} tokens per cell (zoom for detail)` : "");
    draw(mainPlot, mainFigure(view, info.tokens, title), "rendered");
    draw(maskPlot, maskFigure(view, `${info.mask_label}: requested ${fmt(m.get("metrics")?.requested_sparsity)}, achieved ${fmt(m.get("metrics")?.achieved_sparsity)}`), "rendered");
    maskInfo.textContent = `keep-pattern at layer ${v.layer}; reachable sparsity at this length: ${fmt(info.reachable?.[0])} – ${fmt(info.reachable?.[1])}`;
  }

  function paintGallery() {
    const g = m.get("gallery") as GalleryPayload & { dense: MatrixPayload; sparse: MatrixPayload };
    if (!g?.dense) return;
    const order = galleryOrder(g, sortSel.value as SortKey);
    const dense = restitch(decodeMatrix(g.dense), g, order);
    const sparse = restitch(decodeMatrix(g.sparse), g, order);
    const c = g.cell;
    const labels = order.map(([l, hh], k) => ({ text: `L${l}H${hh}`, x: (k % g.n_heads) * c + 1, y: Math.floor(k / g.n_heads) * c + 1 }));
    const ann = (xref: string) => labels.map((a) => ({ text: a.text, x: a.x, y: a.y, xref, yref: "y", showarrow: false, xanchor: "left", yanchor: "top", font: { size: 8, color: "white" } }));
    const hover = (k: number) => order[k];
    const custom = dense.map((r, y) => Array.from(r, (_, x) => { const s = hover(Math.floor(y / c) * g.n_heads + Math.floor(x / c)); return s ? `L${s[0]}H${s[1]} KL ${fmt(g.kl[s[0] * g.n_heads + s[1]], 4)} mass lost ${fmt(g.mass_lost[s[0] * g.n_heads + s[1]])}` : ""; }));
    const trace = (z: Float32Array[], xaxis: string) => ({ type: "heatmap", z, xaxis, yaxis: "y", colorscale: "Viridis", showscale: false, zsmooth: false, customdata: custom, hovertemplate: "%{customdata}<extra></extra>" });
    const fig: Figure = {
      data: [trace(dense, "x"), trace(sparse, "x2")],
      layout: {
        xaxis: { domain: [0, 0.48], showticklabels: false, title: { text: "dense" } },
        xaxis2: { domain: [0.52, 1], showticklabels: false, title: { text: "sparse" } },
        yaxis: { autorange: "reversed", showticklabels: false },
        annotations: [...ann("x"), ...ann("x2")],
        height: Math.max(400, 14 * g.n_layers * 2), margin: { l: 10, r: 10, t: 10, b: 40 }, uirevision: "gallery",
      },
    };
    galleryPlot.dataset.order = JSON.stringify(order.slice(0, 5));
    draw(galleryPlot, fig, "rendered");
    (galleryPlot as any).__order = order;
    (galleryPlot as any).__gallery = g;
  }

  function paintOutput() {
    const met = m.get("metrics") ?? {};
    const info = m.get("info") ?? {};
    headline.replaceChildren();
    const cells: [string, string][] = [
      ["perplexity dense", fmt(met.dense_ppl)], ["perplexity sparse", fmt(met.sparse_ppl)], ["Δ perplexity", fmt(met.delta_ppl)],
      ["sparsity achieved", fmt(met.achieved_sparsity)], ["next-token KL", fmt(met.next_token_kl, 4)], ["top-1 agreement", fmt(met.top1_agreement)],
    ];
    for (const [k, v] of cells) { const d = h("div", { class: "asw-metric" }); d.append(h("span", {}, k), h("b", { "data-metric": k }, v)); headline.appendChild(d); }
    if (info.n_layers) draw(layerPlot, layerFigure(met, info.n_layers, m.get("layer")), "rendered");
    conts.replaceChildren();
    const toks = met.continuation_tokens ?? {};
    if (toks.dense) {
      const split = firstDivergence(toks.dense, toks.sparse);
      for (const name of ["dense", "sparse"]) {
        const box = h("div", { class: "asw-cont" });
        box.appendChild(h("b", {}, `${name}: `));
        (toks[name] as string[]).forEach((t, i) => box.appendChild(h("span", { class: i === split ? "asw-diverge" : i > split ? "asw-after" : "" }, t)));
        conts.appendChild(box);
      }
    }
    const v = m.get("view") ?? {};
    nextTok.replaceChildren();
    if (v.next_tokens) {
      nextTok.appendChild(h("div", {}, `next token after position ${v.position} (${info.tokens?.[v.position] ?? ""}):`));
      const table = h("table");
      for (const name of ["dense", "sparse"]) {
        const tr = h("tr");
        tr.appendChild(h("th", {}, name));
        for (const [tok, p] of v.next_tokens[name]) tr.appendChild(h("td", {}, `${JSON.stringify(tok)} ${(100 * p).toFixed(1)}%`));
        table.appendChild(tr);
      }
      nextTok.appendChild(table);
    }
  }

  function refresh() {
    paintStatus();
    paintInfo();
    paintSparsity();
    if (current === "main" || current === "mask") paintMain();
    if (current === "gallery") paintGallery();
    if (current === "output") paintOutput();
  }

  // clicks on plots report intent back to the kernel
  const onClick = (plot: HTMLElement, handler: (pt: any) => void) =>
    (plot as any).on?.("plotly_click", (ev: any) => ev?.points?.[0] && handler(ev.points[0]));
  const wire = () => {
    onClick(layerPlot, (pt) => { if (pt.data?.type === "bar") { set("layer", Number(pt.x)); select("main"); } });
    onClick(galleryPlot, (pt) => {
      const slot = slotAt(pt.x, pt.y, (galleryPlot as any).__gallery, (galleryPlot as any).__order);
      if (slot) { set("layer", slot[0]); set("head", slot[1]); select("main"); }
    });
    onClick(mainPlot, (pt) => { set("position", Number(pt.y)); });
    (mainPlot as any).on?.("plotly_relayout", (ev: any) => {
      if (ev["xaxis.autorange"] || ev["yaxis.autorange"]) { set("zoom", []); return; }
      const x0 = ev["xaxis.range[0]"] ?? ev["xaxis2.range[0]"], x1 = ev["xaxis.range[1]"] ?? ev["xaxis2.range[1]"];
      const y0 = ev["yaxis.range[0]"], y1 = ev["yaxis.range[1]"];
      if ([x0, x1, y0, y1].every((v) => typeof v === "number")) {
        set("zoom", [Math.floor(Math.min(y0, y1)), Math.ceil(Math.max(y0, y1)) + 1, Math.floor(Math.min(x0, x1)), Math.ceil(Math.max(x0, x1)) + 1]);
      }
    });
  };

  paintCatalog();
  paintParams();
  select("main");
  requestAnimationFrame(() => wire());
  m.on("change:catalog", () => { paintCatalog(); paintParams(); });
  m.on("change:mask", () => { paintParams(); refresh(); });
  m.on("change:info", () => { paintParams(); refresh(); });
  for (const name of ["view", "metrics", "status", "layer", "head", "text", "sparsity"]) m.on(`change:${name}`, refresh);
  m.on("change:gallery", () => current === "gallery" && paintGallery());

  const resize = new ResizeObserver(() => { for (const p of [mainPlot, galleryPlot, layerPlot, maskPlot]) if (p.offsetParent && (p as any).data) Plotly.Plots.resize(p); });
  resize.observe(root);
  return () => {
    resize.disconnect();
    if (timer) clearInterval(timer);
    for (const p of [mainPlot, galleryPlot, layerPlot, maskPlot]) Plotly.purge(p);
  };
}

export default { render };
