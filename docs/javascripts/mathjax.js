// MathJax 3 for the whole site, typesetting only where math is written: the \(...\) and \[...\]
// of pymdownx.arithmatex (generic mode) on the Markdown pages, and the notebooks' own $...$ and
// $$...$$ in their rendered Markdown cells (mkdocs-jupyter leaves them as text). Code, API
// signatures and the rest of the page are left alone; the table of contents is typeset too, for the
// notebooks' headings with math in them.
const mathElements = [".arithmatex", ".jp-RenderedMarkdown", ".md-nav--secondary"];

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  startup: { elements: mathElements }
};

// Material's instant navigation swaps the page without reloading scripts: typeset again.
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise(mathElements);
  }
});
