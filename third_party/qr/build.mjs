// build.mjs bundles qrcode-generator 2.0.4 into one minified ES module for the page
// (the safety number's QR code), and copies its licence notice. `make vendor` runs it
// into static/vendor after ts-mls; `make vendor-check` runs it into a temporary
// directory and compares.
//
// qrcode-generator's npm tarball has no LICENSE file: its licence (MIT) is the notice at
// the head of dist/qrcode.mjs, the same text as the upstream repository's LICENSE. That
// notice is what LICENSES/qrcode-generator.txt holds, cut from the file the lockfile
// installs, so it cannot drift from what was bundled.
//
// Usage: node build.mjs OUTDIR
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] || join(here, "../../static/vendor"));
const pkgDir = join(here, "node_modules/qrcode-generator");
const version = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;
const bundleName = `qrcode-generator-${version}.min.js`;

const result = await esbuild.build({
  entryPoints: [join(here, "entry.js")],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2022",
  platform: "browser",
  legalComments: "none",
  charset: "utf8",
  metafile: true,
  write: false,
  absWorkingDir: here,
  banner: { js: `/* qrcode-generator ${version} (MIT, Kazuhiko Arase); licence in LICENSES/ */` },
});

// Only qrcode-generator may end up inside: anything else would need its own licence.
for (const output of Object.values(result.metafile.outputs)) {
  for (const input of Object.keys(output.inputs)) {
    const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m && m[1] !== "qrcode-generator") throw new Error(`unexpected bundled package ${m[1]}`);
  }
}

// The licence notice: the leading block of // comments of the module, up to the first
// blank line, without the comment markers.
const source = readFileSync(join(pkgDir, "dist/qrcode.mjs"), "utf8");
const head = source.split("\n\n")[0].split("\n");
if (!head.every((l) => l.startsWith("//"))) throw new Error("qrcode.mjs no longer starts with its licence notice");
const notice = head.map((l) => l.replace(/^\/\/ ?/, "")).filter((l) => !/^-+$/.test(l)).join("\n").trim() + "\n";
if (!notice.includes("MIT license")) throw new Error("qrcode.mjs notice does not name the MIT license");

mkdirSync(join(outDir, "LICENSES"), { recursive: true });
writeFileSync(join(outDir, "LICENSES", "qrcode-generator.txt"), notice);

const code = result.outputFiles[0].contents;
writeFileSync(join(outDir, bundleName), code);
console.log(`${bundleName}: ${code.length} bytes from qrcode-generator`);
