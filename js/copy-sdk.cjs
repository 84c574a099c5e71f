// `npm pack` / `npm publish` (prepack): copy the SDK Django serves, django_pulse/static/django_pulse/pulse.js and
// its ES module and types, into this package, byte for byte: one source for the <script> tag and for npm.
// postpack (`--clean`) removes the copies again, so a stale one is never packed or edited by mistake.
'use strict';

const fs = require('fs');
const path = require('path');

const STATIC = path.join(__dirname, '..', 'django_pulse', 'static', 'django_pulse');
const COPIED = ['pulse.js', 'pulse.mjs', 'pulse.d.ts'];
const FROM_ROOT = ['LICENSE'];

for (const name of [...COPIED, ...FROM_ROOT]) {
  const target = path.join(__dirname, name);
  if (process.argv.includes('--clean')) fs.rmSync(target, { force: true });
  else fs.copyFileSync(path.join(COPIED.includes(name) ? STATIC : path.join(__dirname, '..'), name), target);
}
