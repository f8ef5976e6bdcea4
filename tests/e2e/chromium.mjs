// Debian's headless Chromium for the end-to-end drivers (ohif.mjs, ohif_sr.mjs, swagger.mjs), in a throw-away
// profile, kept off the network. Software WebGL2 stays on (OHIF renders nothing without WebGL).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// A persistent context (one window, as a user has) with `options` (viewport, serviceWorkers, ...); `close()` ends
// the browser and removes its profile.
export async function launch(name, options) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-e2e-`));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
    ...options,
  });
  async function close() {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  return { context, close };
}
