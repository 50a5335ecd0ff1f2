declare module "plotly.js-cartesian-dist-min" {
  const Plotly: {
    react(el: HTMLElement, data: unknown[], layout: unknown, config?: unknown): Promise<unknown>;
    purge(el: HTMLElement): void;
    downloadImage(el: HTMLElement, opts: Record<string, unknown>): Promise<string>;
    Plots: { resize(el: HTMLElement): void };
  };
  export default Plotly;
}
