#!/usr/bin/env node
import { main } from './cli.js';

const code = await main(process.argv.slice(2));
process.exitCode = code;
// An agent that has stopped is done, even if a stage or handler module left a handle open
// (a database pool, a timer): exit once output has had a moment to drain.
setTimeout(() => process.exit(code), 500).unref();
