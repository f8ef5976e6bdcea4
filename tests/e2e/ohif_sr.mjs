// Drives OHIF in Debian's headless Chromium for tests/test_ohif.py's Structured Report test:
// `node ohif_sr.mjs '<job JSON>'`. It opens the study by URL, waits for its image, then opens the study's SR series
// (the archive's annotation export) from its thumbnail as a user does, and reports what the viewer shows: the
// thumbnails' text, the SR viewport's image and the measurements drawn on it (their text as cornerstone's SVG
// layer renders it), and the measurement panel after the SR is loaded into it. Screenshots go to job.artifacts;
// one JSON report goes to stdout. The test judges it.
import path from 'node:path';
import { launch } from './chromium.mjs';

const job = JSON.parse(process.argv[2]);
const WAIT = 60_000; // ms: longest wait for one thing to appear in the viewer

const report = { steps: {}, requests: [], console: [], pageErrors: [], error: null };
const { context, close } = await launch('ohif-sr', {
  viewport: { width: 1400, height: 900 },
  serviceWorkers: 'block',
});
const page = context.pages()[0] || (await context.newPage());
page.on('requestfinished', async request => {
  if (!request.url().startsWith(job.server)) return;
  let response = null;
  try {
    response = await request.response();
  } catch {
    return;
  }
  report.requests.push({
    method: request.method(),
    url: request.url().slice(job.server.length),
    status: response ? response.status() : null,
    failure: null,
  });
});
page.on('requestfailed', request => {
  if (!request.url().startsWith(job.server)) return;
  const failure = request.failure()?.errorText || 'failed';
  report.requests.push({ method: request.method(), url: request.url().slice(job.server.length), status: null, failure });
});
page.on('console', message => {
  if (message.type() === 'error') report.console.push(message.text().slice(0, 500));
});
page.on('pageerror', error => report.pageErrors.push(String(error).slice(0, 500)));

// What the viewports show: each one's image and the text of the annotations drawn on it (cornerstone's SVG layer).
function viewports() {
  const engine = window.cornerstone?.getRenderingEngines?.()[0];
  if (!engine) return [];
  return engine.getViewports().map(viewport => {
    const pane = viewport.element.closest('[data-cy="viewport-pane"]') || viewport.element.parentElement;
    const svg = viewport.element.querySelector('svg.svg-layer'); // cornerstone's annotation layer
    return {
      id: viewport.id,
      imageId: viewport.getCurrentImageId?.() || null,
      svgText: svg ? Array.from(svg.querySelectorAll('text')).map(t => t.textContent).join(' | ') : '',
      svgShapes: svg ? svg.querySelectorAll('line, path, polyline, circle, ellipse').length : 0,
      paneText: pane ? pane.innerText : '',
    };
  });
}

async function step(name) {
  await page.screenshot({ path: path.join(job.artifacts, `${name}.png`) });
  report.steps[name] = { viewports: await page.evaluate(viewports), body: await page.locator('body').innerText() };
  return report.steps[name];
}

async function srScenario() {
  // 1. The study by URL: its CT image shown.
  await page.goto(`${job.viewer}/viewer?StudyInstanceUIDs=${job.studyInstanceUID}`);
  await page.waitForFunction(
    uid => {
      const engine = window.cornerstone?.getRenderingEngines?.()[0];
      return engine && engine.getViewports().some(v => (v.getCurrentImageId?.() || '').includes(uid));
    },
    job.ctSeriesInstanceUID,
    { timeout: WAIT },
  );
  // Every slice of the stack loaded, and the viewer idle, before the SR comes in.
  await page.waitForFunction(
    () => {
      const engine = window.cornerstone?.getRenderingEngines?.()[0];
      const viewport = engine?.getViewports()[0];
      const ids = viewport?.getImageIds?.() || [];
      return ids.length > 0 && ids.every(id => window.cornerstone.cache.getImage(id));
    },
    null,
    { timeout: WAIT },
  );
  await page.waitForLoadState('networkidle');
  // 2. The SR series' thumbnail in the study browser: its description, then a double click loads it.
  const thumbnail = page.getByText(job.srSeriesDescription, { exact: true }).first();
  await thumbnail.waitFor({ timeout: WAIT });
  await step('study-opened');
  await thumbnail.dblclick();
  // The SR viewport shows the measured image with the SR's measurement drawn on it (DICOMSRDisplay). Cornerstone draws
  // annotations when it renders, and OHIF 3.13 sometimes adds the SR's after the image's render and draws them only
  // later or not at all (its race, seen in about one run of three): the pointer moves over the image meanwhile, as a
  // user's would, which renders it again, and the test judges the measurement once loaded for tracking (step 3).
  await page.waitForFunction(
    uid => {
      const engine = window.cornerstone?.getRenderingEngines?.()[0];
      return !!engine?.getViewports().some(v => (v.getCurrentImageId?.() || '').includes(uid));
    },
    job.measuredSOPInstanceUID,
    { timeout: WAIT },
  );
  const drawn = () =>
    page.evaluate(([uid, text]) => {
      const engine = window.cornerstone?.getRenderingEngines?.()[0];
      return !!engine?.getViewports().some(v => {
        const svg = v.element.querySelector('svg.svg-layer');
        return (v.getCurrentImageId?.() || '').includes(uid) && svg && svg.textContent.includes(text);
      });
    }, [job.measuredSOPInstanceUID, job.expectedText]);
  const deadline = Date.now() + 15_000;
  for (let i = 0; !(await drawn()) && Date.now() < deadline; i++) {
    const box = await page.locator('canvas.cornerstone-canvas').first().boundingBox();
    if (box) await page.mouse.move(box.x + box.width * (0.3 + 0.05 * (i % 5)), box.y + box.height * 0.8);
    await page.waitForTimeout(250);
  }
  await page.waitForTimeout(500);
  await step('sr-viewport');
  // 3. OHIF offers to load the SR's measurements for tracking (it does only when its tools can take them: the
  // measurement is rehydratable); accepted, the measurement panel lists the length as an editable measurement.
  await page.getByRole('button', { name: 'Yes' }).first().click({ timeout: WAIT });
  const editable = () =>
    (window.cornerstoneTools?.annotation?.state?.getAllAnnotations?.() || [])
      .filter(a => a.metadata?.toolName === 'Length')
      .map(a => ({
        toolName: a.metadata.toolName,
        imageId: a.metadata.referencedImageId || null,
        length: Object.values(a.data?.cachedStats || {})[0]?.length ?? null,
        unit: Object.values(a.data?.cachedStats || {})[0]?.unit ?? null,
      }));
  await page.waitForFunction(`(${editable})().some(a => a.length !== null)`, null, { timeout: WAIT });
  await page.waitForTimeout(500);
  await step('hydrated');
  report.steps.hydrated.annotations = await page.evaluate(`(${editable})()`);
}

try {
  if (job.scenario === 'sr') await srScenario();
  else throw new Error(`unknown scenario ${job.scenario}`);
} catch (error) {
  report.error = String(error?.stack || error);
  await page.screenshot({ path: path.join(job.artifacts, 'error.png') }).catch(() => {});
  report.steps.errorAnnotations = await page
    .evaluate(() =>
      (window.cornerstoneTools?.annotation?.state?.getAllAnnotations?.() || []).map(a => ({
        toolName: a.metadata?.toolName,
        imageId: a.metadata?.referencedImageId || null,
      })),
    )
    .catch(() => []);
  report.steps.error = { viewports: await page.evaluate(viewports).catch(() => []), body: await page.locator('body').innerText().catch(() => '') };
} finally {
  await close();
}
process.stdout.write(JSON.stringify(report));
