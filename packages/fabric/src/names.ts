import { FabricError } from '@stagefabric/runtime';

/**
 * Node names and namespaces end up in Redis keys, consumer names, log lines,
 * metric labels and terminals: they are kept to a plain set of characters,
 * wide enough for host names and Kubernetes pod names.
 */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const NAME_RULE = 'must be 1 to 63 letters, digits, _ . or -, starting with a letter or digit';

/** A stage's part of an instance address: anything printable but the separators `@` and `>` and spaces. */
const STAGE = /^[^\s@>\p{Cc}]{1,200}$/u;

export function isName(value: unknown): value is string {
  return typeof value === 'string' && NAME.test(value);
}

/** Checks a node name or namespace given as `option`; the error names the option, the value and the rule. */
export function checkName(option: string, value: string): string {
  if (!isName(value)) throw new FabricError('SF_BAD_OPTION', `${option} ${JSON.stringify(value).slice(0, 80)}: ${NAME_RULE}`);
  return value;
}

/** Whether `value` is an instance address `stage@node` with a valid node name. */
export function isInstance(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const at = value.lastIndexOf('@');
  return at > 0 && STAGE.test(value.slice(0, at)) && NAME.test(value.slice(at + 1));
}

/** Splits a subscription key `consumer>producer` into its two instance addresses, when it is one. */
export function splitKey(key: string): { consumer: string; producer: string } | undefined {
  const gt = key.indexOf('>');
  if (gt < 0 || key.indexOf('>', gt + 1) >= 0) return undefined;
  const consumer = key.slice(0, gt);
  const producer = key.slice(gt + 1);
  return isInstance(consumer) && isInstance(producer) ? { consumer, producer } : undefined;
}
