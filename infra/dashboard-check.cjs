// Loads Prism's dashboard in headless Chromium (Debian's, driven by playwright-core), waits until
// it shows live data, checks what it rendered, and takes a screenshot.
//   node infra/dashboard-check.cjs URL SCREENSHOT.png
// PRISM_TEST_PLAYWRIGHT: the playwright-core package folder; PRISM_TEST_CHROMIUM: the browser.
"use strict";
const { chromium } = require(process.env.PRISM_TEST_PLAYWRIGHT);

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: process.env.PRISM_TEST_CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    // Live data: bars from the stream, and status events.
    await page.waitForFunction(() => window.prismDashboard && window.prismDashboard.bars > 0 && window.prismDashboard.statusEvents > 0, null, { timeout: 60000 });
    // Let the tables fill (refreshed every 5 s) and a second status event arrive.
    await page.waitForTimeout(1500);
    const shown = await page.evaluate(() => ({
      dashboard: window.prismDashboard,
      canvases: document.querySelectorAll("#chart canvas").length,
      architecture: document.getElementById("architecture").textContent,
      horizons: document.getElementById("horizons").textContent,
      lagRows: document.querySelectorAll("#lag tbody tr").length,
      viewRows: document.querySelectorAll("#views tbody tr").length,
      symbols: [...document.querySelectorAll("#symbol option")].map((o) => o.value),
      connection: document.getElementById("connection").textContent,
    }));
    shown.pageErrors = errors;
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify(shown));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
