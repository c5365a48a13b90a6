#!/usr/bin/env node
// A committed entry point, so npm links `stagectl` at install time, before the build has made dist/.
import '../dist/main.js';
