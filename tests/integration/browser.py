"""Read a Snakemake HTML report the way a person does: open it in headless Chromium, click
every result category and subcategory, and keep what the page shows.

The report is a JavaScript application (its results are rendered only once a category is
clicked), so a harness page loads it in an iframe, clicks through the menu and writes what it
saw into its own DOM, which ``chromium --dump-dom`` prints. What Snakemake registered (the
report's embedded ``categories`` and ``results``) is then compared with what was rendered.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--allow-file-access-from-files", "--virtual-time-budget=120000"]

HARNESS = """<!DOCTYPE html><html><body><pre id="out">pending</pre>
<iframe id="r" src="REPORT" style="width:1600px;height:1200px"></iframe>
<script>
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function until(cond, ms) { for (let t = 0; t < ms; t += 50) { if (cond()) return true; await sleep(50); } return false; }
async function run() {
  const frame = document.getElementById('r');
  const ready = await until(() => frame.contentDocument && frame.contentDocument.querySelectorAll('nav div.p-3 a').length > 0, 60000);
  if (!ready) throw new Error('the report did not render its menu');
  const d = frame.contentDocument;
  const menu = () => Array.from(d.querySelectorAll('nav div.p-3 a'));
  const menuText = () => (d.querySelector('nav div.p-3') || d.body).innerText;
  // the result categories are the entries under the "Results" header (a category may share its
  // name with an entry of the "General" section, e.g. Statistics)
  const resultEntries = () => {
    const items = Array.from(d.querySelectorAll('nav div.p-3 li'));
    const i = items.findIndex(li => li.textContent.trim() === 'Results');
    return i < 0 ? [] : items.slice(i + 1);
  };
  const open = async (cat) => {
    const home = d.querySelector('nav ol a');
    if (!home) throw new Error('no home link while opening ' + cat + ': ' + d.body.innerText.slice(0, 300));
    home.click(); await sleep(200);
    const entry = resultEntries().find(li => li.textContent.trim() === cat);
    if (!entry) throw new Error('no menu entry ' + cat + ' in ' + menuText());
    entry.querySelector('a').click(); await sleep(200);
  };
  const categories = resultEntries().map(li => li.textContent.trim());
  const out = {menu: menuText(), categories: {}};
  for (const cat of categories) {
    await open(cat);
    const views = {"": menuText()};
    // subcategories Snakemake registered (a category with one lists its results directly)
    for (const sub of (SUBCATEGORIES[cat] || [])) {
      await open(cat);
      const link = menu().find(a => a.textContent.trim() === sub);
      if (!link) continue;
      link.click(); await sleep(200);
      views[sub] = menuText();
    }
    out.categories[cat] = views;
  }
  document.getElementById('out').textContent = JSON.stringify(out);
}
window.addEventListener('load', () => run().catch(e => { document.getElementById('out').textContent = 'ERROR ' + e; }));
</script></body></html>
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def registered(report_html: Path) -> tuple[dict, dict]:
    """(categories: {category: {subcategory: [paths]}}, results: {path: {name, labels, ...}}) as
    Snakemake embedded them in the report."""
    text = Path(report_html).read_text()
    found = {}
    for name in ("categories", "results"):
        m = re.search(rf"<script id=\"{name}\">\s*(?:var )?{name} = (.*?);\s*</script>", text, re.S)
        if not m:
            raise AssertionError(f"{report_html}: no embedded {name}")
        found[name] = json.loads(m.group(1))
    return found["categories"], found["results"]


def rendered(report_html: Path, timeout: int = 300) -> dict:
    """What the page shows: {"menu": the top menu's text, "categories": {category: {"": the
    category's view, subcategory: its view}}}."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found")
    report_html = Path(report_html).resolve()
    harness = report_html.with_name(f"{report_html.stem}.harness.html")
    subcategories = {cat: list(subs) for cat, subs in registered(report_html)[0].items() if len(subs) > 1}
    harness.write_text(HARNESS.replace("REPORT", report_html.name)
                       .replace("SUBCATEGORIES[cat]", f"({json.dumps(subcategories)})[cat]"))
    try:
        proc = subprocess.run([exe, *CHROMIUM_FLAGS, "--dump-dom", harness.as_uri()], capture_output=True,
                              text=True, timeout=timeout)
    finally:
        harness.unlink()
    m = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
    out = html.unescape(m.group(1)) if m else ""
    if not out.startswith("{"):
        raise AssertionError(f"the harness failed ({proc.returncode}): {out[:500]!r}\n{proc.stderr[-2000:]}")
    return json.loads(out)


def _row_listed(values: list[str], view: str) -> bool:
    """A results table row (tab-separated cells) holding exactly these label values."""
    want = sorted(str(v) for v in values)
    return any(sorted(c.strip() for c in line.split("\t") if c.strip()) == want for line in view.splitlines())


def unlisted(report_html: Path) -> list[str]:
    """Every registered category, subcategory and result that the rendered page does not list
    (empty when the page shows them all)."""
    categories, results = registered(report_html)
    page = rendered(report_html)
    problems = []
    for cat, subs in categories.items():
        views = page["categories"].get(cat)
        if views is None:
            problems.append(f"category {cat!r} is not in the menu")
            continue
        for sub, paths in subs.items():
            if len(subs) > 1:
                if sub not in views:
                    problems.append(f"subcategory {cat!r} / {sub!r} is not listed")
                    continue
                view = views[sub]
            else:
                view = views[""]
            for path in paths:
                r = results[path]
                if r.get("labels"):
                    ok = _row_listed(list(r["labels"].values()), view)
                else:
                    ok = any(line.strip() in (path, r["name"]) for line in view.splitlines())
                if not ok:
                    problems.append(f"{cat!r} / {sub!r}: {path} ({r.get('labels') or r['name']}) is not listed")
    return problems
