// Quarto's pre-render script (see _quarto.yml): runs `python -m pipeline freeze`, which clears
// _freeze/ when study.yml, the data or the pipeline's code changed (freeze: auto watches only the
// documents' sources). TypeScript because Quarto runs it with its own Deno; Python is QUARTO_PYTHON,
// as for the documents, else python3 from PATH.
const python = Deno.env.get("QUARTO_PYTHON") || (Deno.build.os === "windows" ? "python" : "python3");
const { code } = await new Deno.Command(python, {
  args: ["-m", "pipeline", "freeze"],
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (code !== 0) Deno.exit(code);
