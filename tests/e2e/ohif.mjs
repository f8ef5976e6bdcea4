// Drives OHIF in Debian's headless Chromium for tests/test_ohif.py: `node ohif.mjs '<job JSON>'`.
// It does what a user does (study list, open a study, scroll, pick a series), saves what the viewport's canvas
// shows (canvas-*.png) and a screenshot of the page (*.png) for each step into job.artifacts, records every
// request the page made to the archive with its status, and prints one JSON report on stdout. The test judges it.
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './chromium.mjs';

const job = JSON.parse(process.argv[2]);
const WAIT = 60_000; // ms: longest wait for one thing to appear in the viewer

const report = { steps: {}, requests: [], console: [], pageErrors: [], error: null };
const { context, close } = await launch('ohif', {
  viewport: { width: 1280, height: 800 },
  serviceWorkers: 'block',
});

// Helpers in every page: the active cornerstone viewport, a small signature of what its canvas shows, and what
// it displays (image index, images loaded, the overlay's text).
await context.addInitScript(() => {
  window.__e2e = {
    viewport() {
      const engine = window.cornerstone?.getRenderingEngines?.()[0];
      if (!engine) return null;
      const active = window.services?.viewportGridService?.getActiveViewportId?.();
      return (active && engine.getViewport(active)) || engine.getViewports()[0] || null;
    },
    signature() {
      const viewport = this.viewport();
      const canvas = viewport?.canvas;
      if (!canvas || !canvas.width || !canvas.height) return null;
      const small = document.createElement('canvas');
      small.width = small.height = 32;
      const context = small.getContext('2d');
      context.drawImage(canvas, 0, 0, 32, 32);
      const data = context.getImageData(0, 0, 32, 32).data;
      const values = [];
      let max = 0;
      for (let i = 0; i < data.length; i += 4) {
        const value = Math.round((data[i] + data[i + 1] + data[i + 2]) / 3);
        values.push(value);
        max = Math.max(max, value);
      }
      return { max, key: values.join(',') + '|' + (viewport.getCurrentImageId?.() || '') };
    },
    state() {
      const viewport = this.viewport();
      if (!viewport) return null;
      const imageIds = viewport.getImageIds?.() || [];
      const pane = viewport.element.closest('[data-cy="viewport-pane"]') || viewport.element;
      return {
        imageIndex: viewport.getCurrentImageIdIndex?.(),
        imageId: viewport.getCurrentImageId?.(),
        images: imageIds.length,
        loaded: imageIds.filter(id => window.cornerstone.cache.getImage(id)).length,
        overlay: pane.innerText,
        canvas: [viewport.canvas.width, viewport.canvas.height],
      };
    },
  };
});

const page = context.pages()[0] || (await context.newPage());
const started = new Map();
page.on('request', request => started.set(request, Date.now()));
function record(request, status, failure) {
  if (!request.url().startsWith(job.server)) return;
  report.requests.push({
    method: request.method(),
    url: request.url().slice(job.server.length),
    accept: request.headers()['accept'] || '',
    startedAt: started.get(request) ?? null, // ms since the epoch, as performance.timeOrigin
    ms: Date.now() - (started.get(request) ?? Date.now()),
    status,
    failure: failure || null,
  });
}
page.on('requestfinished', async request => {
  let response = null;
  try {
    response = await request.response();
  } catch {
    return; // the browser closed while this request's answer was being read: the run is over
  }
  record(request, response ? response.status() : null, null);
});
page.on('requestfailed', request => record(request, null, request.failure()?.errorText || 'failed'));
page.on('console', message => {
  if (message.type() === 'error') report.console.push(message.text().slice(0, 500));
});
page.on('pageerror', error => report.pageErrors.push(String(error).slice(0, 500)));

const signature = () => page.evaluate(() => window.__e2e.signature()?.key ?? null);

// Waits until the viewport shows something not black (and other than `before`), then until it stops changing;
// returns performance.now() in the page at the moment it first showed it.
async function waitRendered(before = null, expectImageId = null) {
  const handle = await page.waitForFunction(
    ([before, expectImageId]) => {
      const signature = window.__e2e.signature();
      const ready =
        signature &&
        signature.max > 30 &&
        signature.key !== before &&
        (!expectImageId || (window.__e2e.viewport().getCurrentImageId() || '').includes(expectImageId));
      return ready ? performance.now() : false;
    },
    [before, expectImageId],
    { polling: 'raf', timeout: WAIT },
  );
  const shownAt = await handle.jsonValue();
  let last = await signature();
  for (let i = 0; i < 50; i++) {
    await page.waitForTimeout(250);
    const now = await signature();
    if (now === last) break;
    last = now;
  }
  return shownAt;
}

// Waits until every image of the viewport's stack is decoded in cornerstone's cache; returns performance.now().
async function allLoaded(timeout = WAIT) {
  const handle = await page.waitForFunction(() => {
    const state = window.__e2e.state();
    return state && state.images > 0 && state.loaded === state.images ? performance.now() : false;
  }, null, { polling: 100, timeout });
  return handle.jsonValue();
}

async function capture(name, extra = {}) {
  const png = await page.evaluate(() => window.__e2e.viewport().canvas.toDataURL('image/png'));
  fs.writeFileSync(path.join(job.artifacts, `canvas-${name}.png`), Buffer.from(png.split(',')[1], 'base64'));
  await page.screenshot({ path: path.join(job.artifacts, `${name}.png`) });
  const state = await page.evaluate(() => window.__e2e.state());
  report.steps[name] = { ...state, canvasFile: `canvas-${name}.png`, ...extra };
  return report.steps[name];
}

async function studyList() {
  await page.goto(job.viewer + '/');
  const row = page.locator('tr', { hasText: job.studyDescription });
  await row.waitFor({ timeout: WAIT });
  const cells = await row.locator('td').allInnerTexts();
  await page.screenshot({ path: path.join(job.artifacts, 'study-list.png') });
  return { row, cells };
}

async function scroll(ticks) {
  const box = await page.locator('canvas.cornerstone-canvas').first().boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  const before = await signature();
  for (let i = 0; i < ticks; i++) {
    await page.mouse.wheel(0, 100);
    await page.waitForTimeout(60);
  }
  await waitRendered(before);
}

async function viewerScenario() {
  // 1. The study list, as a user first sees it.
  const list = await studyList();
  report.steps['study-list'] = { cells: list.cells.map(cell => cell.trim()) };

  // 2. The study by URL: the first image, every slice loaded, then a scroll through the stack.
  await page.goto(`${job.viewer}/viewer?StudyInstanceUIDs=${job.studyInstanceUID}`);
  const firstAt = await waitRendered(null, job.ctSeriesInstanceUID);
  const first = await capture('url-first', { shownAt: firstAt });
  first.allLoadedAt = await allLoaded();
  await scroll(job.scrollTicks);
  await capture('url-scrolled');

  // 3. Each other series, by a double click on its thumbnail.
  for (const series of job.otherSeries) {
    const before = await signature();
    await page.getByText(series.description, { exact: true }).first().dblclick();
    await waitRendered(before, series.seriesInstanceUID);
    await capture(series.name);
  }

  // 4. The study from the study list: select its row, then launch the basic viewer.
  const again = await studyList();
  await again.row.click();
  const launch = page.getByRole('button', { name: 'Basic Viewer' });
  await launch.waitFor({ timeout: WAIT });
  for (const description of [job.ctSeriesDescription, ...job.otherSeries.map(series => series.description)]) {
    await page.getByText(description, { exact: true }).first().waitFor({ timeout: WAIT });
  }
  report.steps['study-list-selected'] = {
    panel: await page.locator('body').innerText(),
  };
  await page.screenshot({ path: path.join(job.artifacts, 'study-list-selected.png') });
  const clickedAt = await page.evaluate(() => performance.now());
  await launch.click();
  const shownAt = await waitRendered(null, job.ctSeriesInstanceUID);
  await capture('list-first', { clickedAt, shownAt });
}

async function timingScenario() {
  // Opening the study by URL: navigation start (performance.now() = 0) to the first image, then to every slice
  // of the stack decoded in cornerstone's cache.
  await page.goto(`${job.viewer}/viewer?StudyInstanceUIDs=${job.studyInstanceUID}`);
  const firstAt = await waitRendered(null, job.ctSeriesInstanceUID);
  const allLoadedAt = await allLoaded(4 * WAIT);
  const timeOrigin = await page.evaluate(() => performance.timeOrigin);
  await capture('timing-first', { shownAt: firstAt, allLoadedAt, timeOrigin });
}

async function measureScenario() {
  // Measurement tracking ("Basic Viewer", OHIF's longitudinal mode): a Length drawn on the CT slice shown, the
  // series tracked, then the report saved as an SR ("Create SR"), which OHIF stores by STOW-RS.
  await page.goto(`${job.viewer}/viewer?StudyInstanceUIDs=${job.studyInstanceUID}`);
  await waitRendered(null, job.ctSeriesInstanceUID);
  await page.locator('[data-cy="Length"]').first().click();
  const box = await page.locator('canvas.cornerstone-canvas').first().boundingBox();
  const [x, y] = [box.x + box.width / 2, box.y + box.height / 2];
  await page.mouse.move(x - 80, y - 50);
  await page.mouse.down();
  for (let i = 1; i <= 20; i++) {
    await page.mouse.move(x - 80 + 8 * i, y - 50 + 5 * i);
    await page.waitForTimeout(20);
  }
  await page.mouse.up();
  await page.getByRole('button', { name: 'Yes' }).first().click({ timeout: WAIT });
  const imageId = await page.evaluate(() => window.__e2e.viewport().getCurrentImageId());
  await page.locator('[data-cy="trackedMeasurements-btn"]').first().click({ timeout: WAIT }).catch(() => {});
  // What OHIF shows of the length ("99.2 mm"), by the line or in its measurements panel, whichever comes first.
  const shown = page.getByText(/\d+(\.\d+)? mm/).first();
  await shown.waitFor({ timeout: WAIT });
  const shownText = await shown.textContent(); // an SVG text: the label cornerstone draws by the line
  await page.screenshot({ path: path.join(job.artifacts, 'measured.png') });
  await page.getByRole('button', { name: 'Create SR' }).first().click({ timeout: WAIT });
  await page.locator('input[placeholder="Report name"]').fill(job.reportName);
  const stored = page.waitForResponse(
    response => response.request().method() === 'POST' && /\/dicomweb\/studies$/.test(response.url()),
    { timeout: WAIT },
  );
  await page.getByRole('button', { name: 'Save' }).first().click();
  const response = await stored;
  await page.waitForTimeout(1000);
  await page.screenshot({ path: path.join(job.artifacts, 'saved.png') });
  report.steps.measure = { imageId, shownText, stowStatus: response.status(), stowBody: await response.text() };
}

try {
  // A deployment whose app-config takes the token from the first URL (deploy/viewer/app-config.js).
  if (job.token) {
    await page.goto(`${job.viewer}/?token=${encodeURIComponent(job.token)}`, { waitUntil: 'networkidle' });
  }
  if (job.scenario === 'viewer') await viewerScenario();
  else if (job.scenario === 'timing') await timingScenario();
  else if (job.scenario === 'measure') await measureScenario();
  else throw new Error(`unknown scenario ${job.scenario}`);
} catch (error) {
  report.error = String(error?.stack || error);
  await page.screenshot({ path: path.join(job.artifacts, 'error.png') }).catch(() => {});
} finally {
  await close();
}
process.stdout.write(JSON.stringify(report));
