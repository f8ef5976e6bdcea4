// Drives Swagger UI (/api-docs) in Debian's headless Chromium for tests/test_swagger.py: `node swagger.mjs '<job>'`.
// As a user does: opens the page, expands one operation, "Try it out", "Execute" without a token; then "Authorize"
// with the job's token and "Execute" again. It records the response code and body the page shows each time, every
// request the page made (with its Authorization header), Content-Security-Policy violations and page errors, saves
// screenshots into job.artifacts and prints one JSON report on stdout. The test judges it.
import path from 'node:path';
import { launch } from './chromium.mjs';

const job = JSON.parse(process.argv[2]);
const WAIT = 30_000; // ms: longest wait for one thing to appear in the page

const report = { steps: {}, requests: [], violations: [], console: [], pageErrors: [], error: null };
const { context, close } = await launch('swagger', {
  viewport: { width: 1280, height: 900 },
});
// What the page's Content-Security-Policy blocked, as the page itself is told of it.
await context.addInitScript(() => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', event =>
    window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI || '(inline)'}`),
  );
});

const page = context.pages()[0] || (await context.newPage());
page.on('requestfinished', async request => {
  let response = null;
  try {
    response = await request.response();
  } catch {
    return; // the browser closed while this request's answer was being read: the run is over
  }
  report.requests.push({
    method: request.method(),
    url: request.url(),
    status: response ? response.status() : null,
    authorization: (await request.allHeaders())['authorization'] ?? null,
  });
});
page.on('requestfailed', request =>
  report.requests.push({ method: request.method(), url: request.url(), failure: request.failure()?.errorText }),
);
page.on('console', message => {
  if (message.type() === 'error') report.console.push(message.text().slice(0, 500));
});
page.on('pageerror', error => report.pageErrors.push(String(error).slice(0, 500)));

const operation = page.locator(`#operations-${job.tag}-${job.operationId}`);

// Execute the expanded operation; the response code and body Swagger UI shows for it.
async function execute(name) {
  const answered = page.waitForResponse(response => response.url().startsWith(job.server + job.path));
  await operation.locator('button.execute').click();
  await answered;
  const row = operation.locator('.live-responses-table .response');
  await row.waitFor({ timeout: WAIT });
  report.steps[name] = {
    status: (await row.locator('.response-col_status').innerText()).trim(),
    body: await row.locator('.response-col_description').innerText(),
    curl: await operation.locator('.curl-command').innerText(),
  };
  await operation.screenshot({ path: path.join(job.artifacts, `${name}.png`) });
  await operation.locator('button.btn-clear').click();
  await row.waitFor({ state: 'detached', timeout: WAIT });
}

try {
  await page.goto(job.server + '/api-docs');
  await operation.waitFor({ timeout: WAIT });
  report.steps.loaded = { title: await page.locator('.info .title').innerText() };

  await operation.locator('.opblock-summary').first().click();
  await operation.locator('button.try-out__btn').click();
  await execute('anonymous');

  await page.locator('.auth-wrapper button.authorize').click();
  const dialog = page.locator('.modal-ux');
  await dialog.locator('input').first().fill(job.token);
  await dialog.locator('button.authorize').click();
  await dialog.locator('button.btn-done').click();
  await execute('authorized');
} catch (error) {
  report.error = String(error?.stack || error);
  await page.screenshot({ path: path.join(job.artifacts, 'error.png'), fullPage: true }).catch(() => {});
} finally {
  report.violations = await page.evaluate(() => window.__violations).catch(() => ['(not read)']);
  await close();
}
process.stdout.write(JSON.stringify(report));
