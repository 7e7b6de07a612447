#!/usr/bin/env node
// Entry point for `npx portico`: the compiled CLI lives in dist/ (built by `npm install` through `prepare`).
import '../dist/src/cli/main.js';
