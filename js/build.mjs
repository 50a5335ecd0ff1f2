// Builds the widget's one bundle, src/attnsparse_widget/static/widget.js (plus widget.css).
//
// plotly.js ships once, inside widget.js: its own minified file is prepended verbatim, between two marker
// comments, as a classic script that leaves the library in `__aswPlotly` (and `window.Plotly`, which plotly.js
// sets itself). The widget's `import Plotly from "plotly.js-cartesian-dist-min"` resolves to that variable. The
// Python side (export.py) cuts the same span out of widget.js to render exports with kaleido and to inline in
// HTML pages, so the exports draw with exactly the widget's plotly.js and the wheel carries no second copy.
//
// Usage: node js/build.mjs [--watch] [--sourcemap]
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import * as esbuild from "esbuild";

const require = createRequire(import.meta.url);
const PLOTLY = "plotly.js-cartesian-dist-min";
export const BEGIN = "/* attnsparse-widget: plotly.js begins */";
export const END = "/* attnsparse-widget: plotly.js ends */";

const plotly = readFileSync(require.resolve(PLOTLY), "utf8");
const banner = `${BEGIN}\nvar __aswPlotly = (function (module) {\n${plotly}\nreturn module.exports;\n})({ exports: {} });\n${END}`;

const plotlyAsGlobal = {
  name: "plotly-as-global",
  setup(build) {
    build.onResolve({ filter: /^plotly\.js-cartesian-dist-min$/ }, () => ({ path: PLOTLY, namespace: "asw-plotly" }));
    build.onLoad({ filter: /.*/, namespace: "asw-plotly" }, () => ({ contents: "export default __aswPlotly;" }));
  },
};

const watch = process.argv.includes("--watch");
const options = {
  entryPoints: ["js/widget.ts"],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  outdir: "src/attnsparse_widget/static",
  banner: { js: banner },
  sourcemap: process.argv.includes("--sourcemap") ? "inline" : false,
  plugins: [plotlyAsGlobal],
  logLevel: "info",
};
if (watch) {
  await (await esbuild.context(options)).watch();
} else {
  await esbuild.build(options);
}
