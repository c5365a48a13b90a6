// Task handlers of the tracing test: `flaky` fails its first attempt and succeeds on the next.
export async function flaky(_args, { task }) {
  if (task.attempt === 1) throw new Error('the first attempt fails by design');
}
