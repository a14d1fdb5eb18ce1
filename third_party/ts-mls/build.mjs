// build.mjs bundles ts-mls 1.6.4 into one minified ES module for the page, and copies
// the licence of every package that ends up inside it. `make vendor` runs it into
// static/vendor; `make vendor-check` runs it into a temporary directory and compares.
//
// Usage: node build.mjs OUTDIR
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] || join(here, "../../static/vendor"));
const version = JSON.parse(readFileSync(join(here, "node_modules/ts-mls/package.json"), "utf8")).version;
const bundleName = `ts-mls-${version}.min.js`;

// Optional back-ends for ciphersuites other than 1 (X448, ML-KEM, X-Wing, ChaCha20,
// P-256 signing in JS, ML-DSA) and node's crypto are loaded by dynamic import. They are
// replaced by a module that fails when loaded, so the bundle has no import() left and
// asking for another suite gives a clear error instead of a network fetch.
const stubbed = /^(@noble\/curves|@noble\/post-quantum|@noble\/ciphers|@noble\/hashes|@hpke\/dhkem-x448|@hpke\/ml-kem|@hpke\/hybridkem-x-wing|@hpke\/chacha20poly1305|crypto|node:crypto)(\/.*)?$/;
const stubPlugin = {
  name: "stub-optional",
  setup(build) {
    build.onResolve({ filter: stubbed }, (args) => ({ path: args.path, namespace: "stub" }));
    build.onLoad({ filter: /.*/, namespace: "stub" }, (args) => ({
      contents: `throw new Error(${JSON.stringify("not bundled (only ciphersuite 1 is): " + args.path)});`,
      loader: "js",
    }));
  },
};

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
  banner: { js: `/* ts-mls ${version} (MIT, Luka Jacobowitz) with @hpke/core and @hpke/common (MIT, Ajitomi Daisuke); licences in LICENSES/ */` },
  plugins: [stubPlugin],
});

// Every node_modules package that contributed bytes to the output needs its licence.
const packages = new Set();
for (const output of Object.values(result.metafile.outputs)) {
  for (const input of Object.keys(output.inputs)) {
    const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m) packages.add(m[1]);
  }
}

mkdirSync(outDir, { recursive: true });
const licDir = join(outDir, "LICENSES");
rmSync(licDir, { recursive: true, force: true });
mkdirSync(licDir);
for (const pkg of [...packages].sort()) {
  const file = join(here, "node_modules", pkg, "LICENSE");
  if (!existsSync(file)) throw new Error(`no LICENSE file for bundled package ${pkg}`);
  writeFileSync(join(licDir, pkg.replace("@", "").replace("/", "-") + ".txt"), readFileSync(file));
}

const code = result.outputFiles[0].contents;
writeFileSync(join(outDir, bundleName), code);
console.log(`${bundleName}: ${code.length} bytes from ${[...packages].sort().join(", ")}`);
